"""Nearest-neighbour search over gallery vectors: exact (torch, CPU or CUDA, float32/float16) and FAISS kinds.

Index kinds are named in :data:`INDEX_KINDS` (``exact``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq``, ``ivfpq-opq``);
a FAISS factory string is accepted as a kind too. :func:`make_index` builds one, and with ``params.recall`` tunes it
to that recall on a held-out sample of the gallery (the report is on ``index.tuning``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipmath.search.base import Exclusions, SearchHit, SearchResults, VectorIndex
from clipmath.search.exact import ExactIndex, exact_search
from clipmath.search.faiss_index import FaissIndex
from clipmath.search.kinds import INDEX_KINDS, IndexKindError, IndexKindSpec, factory_string, kind_spec
from clipmath.search.params import IndexParams
from clipmath.search.tuning import TuneReport, recall_at_k, tune_recall


def make_index(vectors: np.ndarray, kind: str = "exact", params: IndexParams | None = None) -> VectorIndex:
    """An index of ``kind`` (a name in :data:`INDEX_KINDS` or a FAISS factory string) over ``vectors``.

    With ``params.recall`` set, an approximate index is tuned to reach it (see :func:`tune_recall`).
    """
    params = params or IndexParams()
    spec = kind_spec(kind)
    return _tuned(spec, spec.build(vectors, params), vectors, params)


def open_index(
    vectors: np.ndarray,
    kind: str,
    params: IndexParams,
    folder: Path,
    fingerprint: object,
    ids: Sequence[str] | None = None,
    identity: dict | None = None,
) -> VectorIndex:
    """An index of ``kind`` over ``vectors``, reusing the one saved in ``folder`` when it was built from the same
    rows (``fingerprint``: anything JSON that changes when they do). Kinds without a loader are built every time;
    a folder that cannot be written to only means the index is rebuilt next time. Kinds served elsewhere
    (``milvus:URI``) attach to their collection: ``ids`` are the rows' ids, ``identity`` the store's embedding space
    (model_id, preprocessing, dim) the collection must hold."""
    spec = kind_spec(kind)
    if spec.attach is not None:
        index = spec.attach(kind, vectors, ids, params, identity, fingerprint if isinstance(fingerprint, str) else None)
        return _tuned(spec, index, vectors, params)
    if spec.load is None or len(vectors) == 0:
        return make_index(vectors, "exact" if len(vectors) == 0 else kind, params)
    safe = "".join(c if c.isalnum() else "_" for c in kind)
    saved, stamp = Path(folder) / f"faiss-{safe}.index", Path(folder) / f"faiss-{safe}.json"
    if saved.exists() and stamp.exists() and json.loads(stamp.read_text()).get("ids") == fingerprint:
        return _tuned(spec, spec.load(saved, kind, params, vectors), vectors, params)
    index = make_index(vectors, kind, params)
    try:
        index.save(saved)  # type: ignore[attr-defined]
        stamp.write_text(json.dumps({"ids": fingerprint, "count": len(vectors)}))
    except OSError:
        pass
    return index


def _tuned(spec: IndexKindSpec, index: VectorIndex, vectors: np.ndarray, params: IndexParams) -> VectorIndex:
    """With ``params.recall`` set, an approximate index that has query knobs is tuned to reach it."""
    if params.recall is not None and spec.approximate and hasattr(index, "with_params"):
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
        return tuple(n for n in INDEX_KINDS.names() if INDEX_KINDS.get(n).faiss_description is not None)
    if name == "FaissParams":
        import warnings

        warnings.warn("clipmath.search.FaissParams is now IndexParams", DeprecationWarning, stacklevel=2)
        return IndexParams
    raise AttributeError(name)


__all__ = [
    "INDEX_KINDS",
    "ExactIndex",
    "Exclusions",
    "FaissIndex",
    "factory_string",
    "open_index",
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
