"""FAISS indexes (flat, HNSW, IVF, IVF-PQ with OPQ, or any ``index_factory`` string) behind :class:`VectorIndex`.

Builds never copy the whole gallery to float32: the training sample and then blocks of rows are converted as they are
added (float16 and memory-mapped galleries stay where they are). IVF-PQ can re-rank its candidates with the exact
vectors of the gallery it was built from (the store's own, no second copy inside the index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clipmath.search.base import (
    Exclusions,
    SearchResults,
    VectorIndex,
    check_queries,
    pad_results,
    top_k_sorted,
    unique_rows,
)
from clipmath.search.rowdot import check_half_kernel

_ADD_BLOCK = 65_536


@dataclass(frozen=True)
class IndexParams:
    """Build and query knobs. ``nlist=0`` and ``pq_m=0`` pick sizes from the gallery size and dimension.

    ``refine``: re-rank ``refine_factor * k`` approximate candidates by their exact inner product with the gallery's
    own vectors. ``recall``: tune ``ef_search`` / ``nprobe`` (and the re-rank factor) on a held-out sample of the
    gallery until recall@10 reaches it. ``threads``: FAISS OpenMP threads (0: FAISS's default). ``device`` and
    ``half_kernel`` apply to exact search (``"cuda"``: the gallery in half precision on the GPU; ``half_kernel``: how
    float16 blocks are scored on the CPU, see :mod:`clipmath.search.rowdot`).
    """

    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 8
    opq: bool = False
    nprobe: int = 16
    refine: bool = False
    refine_factor: int = 8
    train_size: int = 100_000
    seed: int = 0
    recall: float | None = None
    tune_queries: int = 500
    threads: int = 0
    device: str = "cpu"
    half_kernel: str = "auto"

    def __post_init__(self) -> None:
        check_half_kernel(self.half_kernel)


#: the name callers used so far
FaissParams = IndexParams


def ivf_lists(n: int, params: IndexParams) -> int:
    """Inverted lists: ~4 sqrt(n), with at least 39 training points per centroid (FAISS's advice)."""
    return params.nlist or max(1, min(65536, int(4 * math.sqrt(max(n, 1))), n // 39))


def pq_layout(n: int, dim: int, params: IndexParams) -> tuple[int, int]:
    """(sub-quantizers, bits each): ``dim/8`` one-byte codes by default, fewer bits on tiny galleries."""
    pq_m = params.pq_m or _largest_divisor_at_most(dim, max(1, dim // 8))
    pq_bits = min(params.pq_bits, max(1, int(math.log2(max(2, n // 39)))))
    return pq_m, pq_bits


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, cap + 1) if n % d == 0)


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
    ``params.refine`` is set.
    """

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
        """Train (on a sample) and fill an index described by ``factory`` (default: :func:`factory_string`)."""
        import faiss

        params = params or IndexParams()
        set_threads(params.threads)
        n, dim = vectors.shape
        description = factory or factory_string(kind, n, dim, params)
        index = faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT)
        _skip_polysemous_training(index)
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None:
            hnsw.efConstruction = params.ef_construction
        if not index.is_trained:
            rng = np.random.default_rng(params.seed)
            rows = np.arange(n) if n <= params.train_size else np.sort(rng.choice(n, params.train_size, replace=False))
            index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        for start in range(0, n, _ADD_BLOCK):
            index.add(np.ascontiguousarray(vectors[start : start + _ADD_BLOCK], dtype=np.float32))
        return cls(index, kind, params, vectors)

    @classmethod
    def load(
        cls, path: str | Path, kind: str, params: IndexParams | None = None, vectors: np.ndarray | None = None
    ) -> FaissIndex:
        import faiss

        index = cls(faiss.read_index(str(path)), kind, params, vectors)
        if index.params.recall is not None and vectors is not None and index.tunable:
            from clipmath.search.tuning import tune_recall

            tune_recall(index, vectors, index.params.recall, sample=index.params.tune_queries, seed=index.params.seed)
        return index

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
        k = max(1, int(k))
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
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
            if exclude is not None and len(exclude[qi]):
                allowed = ~np.isin(found, np.asarray(list(exclude[qi]), dtype=np.int64))
                found, found_scores = found[allowed], found_scores[allowed]
            if rerank:
                found = unique_rows(found)  # sorted: the re-score reads the gallery's rows forwards
                found_scores = np.asarray(self.vectors[found], dtype=np.float32) @ queries[qi]
            top_scores, top_rows = top_k_sorted(found_scores.astype(np.float32), found.astype(np.int64), k)
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


def factory_string(kind: str, n: int, dim: int, params: IndexParams) -> str:
    """The ``faiss.index_factory`` description for a built-in kind (or ``kind`` itself if it is one already)."""
    from clipmath.search.kinds import INDEX_KINDS

    if kind in INDEX_KINDS and INDEX_KINDS.get(kind).factory is not None:
        return INDEX_KINDS.get(kind).factory(n, dim, params)
    return kind
