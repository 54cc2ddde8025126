"""Nearest-neighbour search over gallery vectors: exact (blocked NumPy) and FAISS (flat, HNSW, IVF-PQ)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipmath.errors import ClipmathError
from clipmath.search.base import Exclusions, SearchHit, SearchResults, VectorIndex
from clipmath.search.exact import ExactIndex, exact_search
from clipmath.search.faiss_index import KINDS as FAISS_KINDS
from clipmath.search.faiss_index import FaissIndex, FaissParams

INDEX_CHOICES = ("exact",) + FAISS_KINDS


def make_index(vectors: np.ndarray, kind: str = "exact", params: FaissParams | None = None) -> VectorIndex:
    """An index of ``kind`` (``exact``, ``flat``, ``hnsw``, ``ivfpq``, or a FAISS factory string) over ``vectors``."""
    if kind == "exact":
        return ExactIndex(vectors)
    if kind not in FAISS_KINDS and "," not in kind and not kind.startswith(("IVF", "HNSW", "Flat", "PQ")):
        raise ClipmathError(f"unknown index '{kind}': use one of {', '.join(INDEX_CHOICES)} or a FAISS factory string")
    return FaissIndex.build(vectors, kind, params)


def exclusions_for(ids: Sequence[str], excluded_ids: Sequence[Sequence[str] | str | None]) -> list[list[int]]:
    """Gallery rows to exclude per query, given ids (e.g. each query's reference image id)."""
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    out = []
    for entry in excluded_ids:
        names = [] if entry is None else [entry] if isinstance(entry, str) else list(entry)
        out.append([row_of[name] for name in names if name in row_of])
    return out


__all__ = [
    "FAISS_KINDS",
    "INDEX_CHOICES",
    "ExactIndex",
    "Exclusions",
    "FaissIndex",
    "FaissParams",
    "SearchHit",
    "SearchResults",
    "VectorIndex",
    "exact_search",
    "exclusions_for",
    "make_index",
]
