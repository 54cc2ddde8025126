"""Nearest-neighbour search over gallery vectors: exact (torch, CPU or CUDA, float32/float16) and FAISS kinds.

Index kinds are named in :data:`INDEX_KINDS` (``exact``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq``, ``ivfpq-opq``);
a FAISS factory string is accepted as a kind too. :func:`make_index` builds one, and with ``params.recall`` tunes it
to that recall on a held-out sample of the gallery (the report is on ``index.tuning``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipmath.search.base import Exclusions, SearchHit, SearchResults, VectorIndex
from clipmath.search.exact import ExactIndex, exact_search
from clipmath.search.faiss_index import FaissIndex, FaissParams, IndexParams
from clipmath.search.kinds import INDEX_KINDS, IndexKindError, IndexKindSpec, kind_spec
from clipmath.search.tuning import TuneReport, recall_at_k, tune_recall


def make_index(vectors: np.ndarray, kind: str = "exact", params: IndexParams | None = None) -> VectorIndex:
    """An index of ``kind`` (a name in :data:`INDEX_KINDS` or a FAISS factory string) over ``vectors``.

    With ``params.recall`` set, an approximate index is tuned to reach it (see :func:`tune_recall`).
    """
    params = params or IndexParams()
    spec = kind_spec(kind)
    index = spec.build(vectors, params)
    if params.recall is not None and isinstance(index, FaissIndex) and spec.approximate:
        tune_recall(index, vectors, params.recall, sample=params.tune_queries, seed=params.seed)
    return index


def index_choices() -> tuple[str, ...]:
    """Registered kind names (for help texts); FAISS factory strings are accepted as well."""
    return tuple(INDEX_KINDS.names())


def exclusions_for(ids: Sequence[str], excluded_ids: Sequence[Sequence[str] | str | None]) -> list[list[int]]:
    """Gallery rows to exclude per query, given ids (e.g. each query's reference image id)."""
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    out = []
    for entry in excluded_ids:
        names = [] if entry is None else [entry] if isinstance(entry, str) else list(entry)
        out.append([row_of[name] for name in names if name in row_of])
    return out


def __getattr__(name: str):
    # the tuples callers used before the registry: computed from it
    if name == "INDEX_CHOICES":
        return index_choices()
    if name == "FAISS_KINDS":
        return tuple(n for n in INDEX_KINDS.names() if INDEX_KINDS.get(n).factory is not None)
    raise AttributeError(name)


__all__ = [
    "INDEX_KINDS",
    "ExactIndex",
    "Exclusions",
    "FaissIndex",
    "FaissParams",
    "IndexKindError",
    "IndexKindSpec",
    "IndexParams",
    "SearchHit",
    "SearchResults",
    "TuneReport",
    "VectorIndex",
    "exact_search",
    "exclusions_for",
    "index_choices",
    "kind_spec",
    "make_index",
    "recall_at_k",
    "tune_recall",
]
