"""The built-in index kinds, registered in :data:`clipmath.search.kinds.INDEX_KINDS` on its first use."""

from __future__ import annotations

import numpy as np

from clipmath.search.base import VectorIndex
from clipmath.search.kinds import INDEX_KINDS, IndexKindError, IndexKindSpec, register_faiss_kind
from clipmath.search.params import IndexParams, ivf_lists, pq_layout


def _build_exact(vectors: np.ndarray, params: IndexParams) -> VectorIndex:
    from clipmath.search.exact import ExactIndex

    return ExactIndex(vectors, device=params.device, half_kernel=params.half_kernel)


def _ivfpq(n: int, dim: int, params: IndexParams) -> str:
    pq_m, pq_bits = pq_layout(n, dim, params)
    return f"IVF{ivf_lists(n, params)},PQ{pq_m}x{pq_bits}"


def _ivfpq_opq(n: int, dim: int, params: IndexParams) -> str:
    # default code: 7/8 of a byte per 8 dimensions, so codes plus FAISS's 8-byte ids stay at dim/8 bytes per vector
    pq_m = params.pq_m or max(2, (dim // 8) * 7 // 8)
    _, pq_bits = pq_layout(n, dim, params)
    return f"OPQ{pq_m}_{pq_m * (dim // pq_m)},IVF{ivf_lists(n, params)},PQ{pq_m}x{pq_bits}"


def _ivfpq_fast_scan(n: int, dim: int, params: IndexParams) -> str:
    # 4-bit codes scanned with SIMD lookups: dim/16 bytes per vector by default (pq_m must be even)
    pq_m = params.pq_m or max(2, _even_divisor(dim, dim // 8))
    return f"IVF{ivf_lists(n, params)},PQ{pq_m}x4fs"


def _even_divisor(n: int, cap: int) -> int:
    return max([d for d in range(2, cap + 1, 2) if n % d == 0], default=2)


INDEX_KINDS.register(
    "exact",
    IndexKindSpec("exact", "brute force, float32 or float16, CPU or CUDA (torch)", False, _build_exact),
    aliases=("brute",),
)
register_faiss_kind("flat", "FAISS flat (brute force, float32 copy)", lambda n, d, p: "Flat")
register_faiss_kind("hnsw", "FAISS HNSW graph over float32 (tunes efSearch)", lambda n, d, p: f"HNSW{p.hnsw_m},Flat")
register_faiss_kind(
    "ivf", "FAISS inverted file over float32 (tunes nprobe)", lambda n, d, p: f"IVF{ivf_lists(n, p)},Flat"
)
register_faiss_kind("ivfpq", "FAISS inverted file + product quantizer (tunes nprobe)", _ivfpq)
register_faiss_kind(
    "ivfsq",
    "inverted file + 8-bit scalar quantizer: dim bytes per vector (tunes nprobe)",
    lambda n, d, p: f"IVF{ivf_lists(n, p)},SQ8",
)
register_faiss_kind(
    "ivfpq-fs", "IVF-PQ, 4-bit fast-scan codes: dim/16 bytes per vector (re-rank deep)", _ivfpq_fast_scan
)
register_faiss_kind("ivfpq-opq", "IVF-PQ after an OPQ rotation, <= dim/8 bytes per vector", _ivfpq_opq)


def _attach_milvus(kind: str, *args, **kwargs) -> VectorIndex:
    from clipmath.search.milvus import open_milvus_index

    return open_milvus_index(kind, *args, **kwargs)


def _milvus_needs_uri(vectors: np.ndarray, params: IndexParams) -> VectorIndex:
    raise IndexKindError("the milvus kind names its collection: milvus:URI[#COLLECTION], filled by clipmath sync")


INDEX_KINDS.register(
    "milvus",
    IndexKindSpec(
        "milvus",
        "milvus:URI[#COLLECTION]: a collection filled by clipmath sync (Milvus Lite *.db or a server; "
        "pip install 'clipmath[milvus]')",
        True,
        _milvus_needs_uri,
        attach=_attach_milvus,
    ),
)
