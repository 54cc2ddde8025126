"""FAISS indexes (flat, HNSW, IVF, IVF-PQ with OPQ, or any ``index_factory`` string) behind :class:`VectorIndex`.

Builds never copy the whole gallery to float32: the training sample and then blocks of rows are converted as they are
added (float16 and memory-mapped galleries stay where they are). IVF-PQ can re-rank its candidates with the exact
vectors of the gallery it was built from (the store's own, no second copy inside the index).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from clipmath.errors import SearchError
from clipmath.search.base import (
    Exclusions,
    SearchResults,
    VectorIndex,
    check_gallery,
    check_k,
    check_queries,
    pad_results,
    top_k_sorted,
    unique_rows,
    usable_rows,
)
from clipmath.search.params import IndexParams

_ADD_BLOCK = 65_536


def _skip_polysemous_training(index: object) -> None:
    """IVF-PQ from ``index_factory`` trains a polysemous code order (minutes at 1M) that only a Hamming pre-filter
    uses, and clipmath never turns that filter on: skip it (the codes and every distance are unchanged)."""
    import faiss

    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:  # not an IVF index
        return
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False


def _finite_rows(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``block`` as float32 with the rows holding NaN or infinity zeroed (FAISS cannot rank NaN), and those rows."""
    with np.errstate(over="ignore", invalid="ignore"):
        block = np.ascontiguousarray(block, dtype=np.float32)
    finite = np.isfinite(block).all(axis=1)
    if finite.all():
        return block, np.empty(0, np.int64)
    return np.where(finite[:, None], block, np.float32(0)), np.flatnonzero(~finite)


def set_threads(threads: int) -> None:
    """FAISS OpenMP threads for builds and batched searches (0 leaves FAISS's default)."""
    if threads > 0:
        import faiss

        faiss.omp_set_num_threads(int(threads))


def _single_threaded(call):
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return call()
    finally:
        faiss.omp_set_num_threads(threads)


class FaissIndex(VectorIndex):
    """Inner-product FAISS index over a gallery's vectors; row numbers are the gallery's rows.

    ``vectors`` (optional) is the gallery the index was built from, used to re-rank candidates exactly when
    ``params.refine`` is set. ``unusable``: rows holding NaN or infinity (added as zeros, never returned).
    """

    unusable: np.ndarray = np.empty(0, np.int64)

    def __init__(self, index, kind: str, params: IndexParams | None = None, vectors: np.ndarray | None = None) -> None:
        self.index = index
        self.kind = kind
        self.params = params or IndexParams()
        self.vectors = vectors
        self.tuning = None  # a TuneReport once tuned for a recall target
        self.apply_params(self.params)

    @classmethod
    def build(
        cls, vectors: np.ndarray, kind: str = "flat", params: IndexParams | None = None, factory: str | None = None
    ) -> FaissIndex:
        """Train (on a sample) and fill an index described by ``factory`` (a ``faiss.index_factory`` string; default:
        ``kind`` itself). Registered kinds are built through :func:`clipmath.search.make_index`, which passes it."""
        import faiss

        params = params or IndexParams()
        set_threads(params.threads)
        n, dim = check_gallery(vectors).shape
        description = factory or kind
        try:
            index = faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT)
            _skip_polysemous_training(index)
            hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
            if hnsw is not None:
                hnsw.efConstruction = params.ef_construction
            if not index.is_trained:
                rng = np.random.default_rng(params.seed)
                rows = (
                    np.arange(n) if n <= params.train_size else np.sort(rng.choice(n, params.train_size, replace=False))
                )
                index.train(_finite_rows(vectors[rows])[0])
            unusable = []
            for start in range(0, n, _ADD_BLOCK):
                block, bad = _finite_rows(vectors[start : start + _ADD_BLOCK])
                index.add(block)
                unusable += (bad + start).tolist()
        except RuntimeError as exc:  # FAISS's own refusal (e.g. more IVF lists than vectors): its first line
            text = " ".join(str(exc).split()) or type(exc).__name__
            reason = text.split(" failed: ")[-1] if " failed: " in text else text.rsplit(": ", 1)[-1]
            raise SearchError(f"FAISS cannot build the index '{description}' over {n} vectors: {reason}") from None
        built = cls(index, kind, params, vectors)
        built.unusable = np.asarray(unusable, dtype=np.int64)
        return built

    @classmethod
    def load(
        cls, path: str | Path, kind: str, params: IndexParams | None = None, vectors: np.ndarray | None = None
    ) -> FaissIndex:
        import faiss

        return cls(faiss.read_index(str(path)), kind, params, vectors)

    def save(self, path: str | Path) -> None:
        import faiss

        tmp = Path(str(path) + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def bytes_per_vector(self) -> float:
        """Serialized index size per vector (codes, ids, graph links; quantizers amortised)."""
        import faiss

        return len(faiss.serialize_index(self.index)) / max(1, self.ntotal)

    def with_params(self, **changes) -> FaissIndex:
        """Change query-time knobs (``ef_search``, ``nprobe``, ``refine_factor``) in place; returns self."""
        self.apply_params(replace(self.params, **changes))
        return self

    def search(self, queries: np.ndarray, k: int, exclude: Exclusions = None) -> SearchResults:
        queries = check_queries(queries, self.index.d)
        k = check_k(k)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        extra += len(self.unusable)  # rows holding NaN or infinity: never a result
        rerank = self.params.refine and self.vectors is not None
        fetch = min(self.ntotal, (k + extra) * (self.params.refine_factor if rerank else 1))
        if fetch == 0:
            return pad_results([np.empty(0)] * len(queries), [np.empty(0, np.int64)] * len(queries), k)
        if len(queries) == 1:  # one query: OpenMP start-up costs more than it saves (and thrashes a busy machine)
            scores, rows = _single_threaded(lambda: self.index.search(queries, fetch))
        else:
            scores, rows = self.index.search(queries, fetch)
        out_scores, out_rows = [], []
        for qi in range(len(queries)):
            found = rows[qi][rows[qi] >= 0]
            found_scores = scores[qi][rows[qi] >= 0]
            if len(self.unusable):
                usable = ~np.isin(found, self.unusable)
                found, found_scores = found[usable], found_scores[usable]
            if exclude is not None and len(exclude[qi]):
                allowed = ~np.isin(found, np.asarray(list(exclude[qi]), dtype=np.int64))
                found, found_scores = found[allowed], found_scores[allowed]
            if rerank:
                found = unique_rows(found)  # sorted: the re-score reads the gallery's rows forwards
                found_scores = np.asarray(self.vectors[found], dtype=np.float32) @ queries[qi]
            top_scores, top_rows = top_k_sorted(
                *usable_rows(found_scores.astype(np.float32), found.astype(np.int64)), k
            )
            out_scores.append(top_scores)
            out_rows.append(top_rows)
        return pad_results(out_scores, out_rows, k)

    def apply_params(self, params: IndexParams) -> None:
        """Set the query-time knobs of the wrapped FAISS index from ``params``."""
        import faiss

        self.params = params
        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexRefine):
            inner.k_factor = params.refine_factor
            inner = faiss.downcast_index(inner.base_index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = params.ef_search
        try:
            ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return
        ivf.nprobe = min(params.nprobe, ivf.nlist)

    @property
    def tunable(self) -> str | None:
        """The query knob that trades speed for recall: ``"ef_search"``, ``"nprobe"`` or None (exact)."""
        import faiss

        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        if hasattr(inner, "hnsw"):
            return "ef_search"
        try:
            faiss.extract_index_ivf(self.index)
            return "nprobe"
        except RuntimeError:
            return None
