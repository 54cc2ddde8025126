"""FAISS indexes (flat, HNSW, IVF-PQ, or any ``index_factory`` string) behind the same :class:`VectorIndex` API."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipmath.search.base import Exclusions, SearchResults, VectorIndex, check_queries, pad_results

KINDS = ("flat", "hnsw", "ivfpq")


@dataclass(frozen=True)
class FaissParams:
    """Build and query knobs. ``nlist=0`` and ``pq_m=0`` pick sizes from the gallery size and dimension."""

    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 8
    nprobe: int = 16
    refine: bool = False  # IVF-PQ: re-rank candidates with the exact vectors (more memory, much higher recall)
    refine_factor: int = 4
    train_size: int = 100_000
    seed: int = 0


def factory_string(kind: str, n: int, dim: int, params: FaissParams) -> str:
    """The ``faiss.index_factory`` description for a named kind (or ``kind`` itself if it is one already)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{params.hnsw_m},Flat"
    if kind == "ivfpq":
        # FAISS wants ~39 training points per centroid: small galleries get fewer lists and PQ codes
        nlist = params.nlist or max(1, min(65536, int(4 * math.sqrt(max(n, 1))), n // 39))
        pq_m = params.pq_m or _largest_divisor_at_most(dim, max(1, dim // 8))
        pq_bits = min(params.pq_bits, max(1, int(math.log2(max(2, n // 39)))))
        return f"IVF{nlist},PQ{pq_m}x{pq_bits}" + (",RFlat" if params.refine else "")
    return kind


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, cap + 1) if n % d == 0)


class FaissIndex(VectorIndex):
    """Inner-product FAISS index over a gallery's vectors; row numbers are the gallery's rows."""

    def __init__(self, index, kind: str, params: FaissParams | None = None) -> None:
        self.index = index
        self.kind = kind
        self.params = params or FaissParams()
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str = "flat", params: FaissParams | None = None) -> FaissIndex:
        import faiss

        params = params or FaissParams()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        index = faiss.index_factory(dim, factory_string(kind, n, dim, params), faiss.METRIC_INNER_PRODUCT)
        if kind == "hnsw":
            faiss.downcast_index(index).hnsw.efConstruction = params.ef_construction
        if not index.is_trained:
            rng = np.random.default_rng(params.seed)
            sample = vectors if n <= params.train_size else vectors[rng.choice(n, params.train_size, replace=False)]
            index.train(sample)
        index.add(vectors)
        return cls(index, kind, params)

    @classmethod
    def load(cls, path: str | Path, kind: str, params: FaissParams | None = None) -> FaissIndex:
        import faiss

        return cls(faiss.read_index(str(path)), kind, params)

    def save(self, path: str | Path) -> None:
        import faiss

        tmp = Path(str(path) + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, exclude: Exclusions = None) -> SearchResults:
        queries = check_queries(queries, self.index.d)
        k = max(1, int(k))
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        fetch = min(self.ntotal, k + extra) if self.ntotal else 0
        if fetch == 0:
            return pad_results([np.empty(0)] * len(queries), [np.empty(0, np.int64)] * len(queries), k)
        scores, rows = self.index.search(queries, fetch)
        out_scores, out_rows = [], []
        for qi in range(len(queries)):
            banned = set(exclude[qi]) if exclude is not None else set()
            keep = [(s, r) for s, r in zip(scores[qi], rows[qi]) if r >= 0 and r not in banned]
            keep.sort(key=lambda sr: (-sr[0], sr[1]))
            out_scores.append(np.array([s for s, _ in keep], dtype=np.float32))
            out_rows.append(np.array([r for _, r in keep], dtype=np.int64))
        return pad_results(out_scores, out_rows, k)

    def _apply_search_params(self) -> None:
        import faiss

        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexRefine):
            inner.k_factor = self.params.refine_factor
            inner = faiss.downcast_index(inner.base_index)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = self.params.ef_search
        try:
            faiss.extract_index_ivf(self.index).nprobe = self.params.nprobe
        except RuntimeError:
            pass
