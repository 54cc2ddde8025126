"""The index kinds clipmath knows: one :class:`IndexKindSpec` per name in :data:`INDEX_KINDS`.

A kind says how to build an index over a gallery (and, for FAISS kinds, its ``index_factory`` description). Names
that are not registered but read like a FAISS factory string (``"IVF1024,SQ8"``, ``"HNSW16,Flat"``) are built by
FAISS as they are; anything else is an unknown-kind error with suggestions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from clipmath.errors import ClipmathError
from clipmath.registry import Registry
from clipmath.search.base import VectorIndex
from clipmath.search.params import IndexParams, ivf_lists, pq_layout


class IndexKindError(ClipmathError):
    """An index kind name is unknown or its options do not fit."""


@dataclass(frozen=True)
class IndexKindSpec:
    """One index kind: what it is, whether it is approximate, how to build it."""

    name: str
    summary: str
    approximate: bool
    build: Callable[[np.ndarray, IndexParams], VectorIndex]
    factory: Callable[[int, int, IndexParams], str] | None = None  # FAISS kinds: (n, dim, params) -> description
    #: ``(path, kind, params, vectors) -> index``: a built index saved next to the store is reopened with this
    #: (``None``: the kind is rebuilt on every open, as exact search is)
    load: Callable[..., VectorIndex] | None = None
    #: kinds served by an engine outside this process (``milvus:URI``): ``(kind, vectors, ids, params, identity,
    #: state) -> index`` over a store snapshot, nothing built here
    attach: Callable[..., VectorIndex] | None = None


INDEX_KINDS: Registry[IndexKindSpec] = Registry("index kind", error=IndexKindError)

#: first tokens of FAISS factory strings accepted as index kinds without registration
_FACTORY_PREFIXES = ("IVF", "HNSW", "Flat", "PQ", "OPQ", "SQ", "PCA", "LSH", "NSG", "RR", "L2norm")


def looks_like_factory(name: str) -> bool:
    return "," in name or name.startswith(_FACTORY_PREFIXES)


def kind_spec(name: str) -> IndexKindSpec:
    """The spec for ``name``: a registered kind, or a FAISS factory string built as it is."""
    if name.startswith("milvus:"):
        return replace(INDEX_KINDS.get("milvus"), name=name)
    if name in INDEX_KINDS or not looks_like_factory(name):
        return INDEX_KINDS.get(name)
    return IndexKindSpec(
        name, f"FAISS index_factory('{name}')", True, _faiss_builder(name, lambda n, d, p: name), load=_load_faiss
    )


def factory_string(kind: str, n: int, dim: int, params: IndexParams) -> str:
    """The ``faiss.index_factory`` description for a built-in kind (or ``kind`` itself if it is one already)."""
    spec = kind_spec(kind)
    return spec.factory(n, dim, params) if spec.factory is not None else kind


def _faiss_builder(name: str, factory: Callable[[int, int, IndexParams], str]) -> Callable:
    def build(vectors: np.ndarray, params: IndexParams) -> VectorIndex:
        from clipmath.search.faiss_index import FaissIndex

        n, dim = vectors.shape
        return FaissIndex.build(vectors, name, params, factory=factory(n, dim, params))

    return build


def _load_faiss(path, kind: str, params: IndexParams, vectors: np.ndarray | None) -> VectorIndex:
    from clipmath.search.faiss_index import FaissIndex

    return FaissIndex.load(path, kind, params, vectors)


def _register_faiss(name: str, summary: str, factory: Callable[[int, int, IndexParams], str]) -> None:
    spec = IndexKindSpec(name, summary, name != "flat", _faiss_builder(name, factory), factory, load=_load_faiss)
    INDEX_KINDS.register(name, spec)


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
_register_faiss("flat", "FAISS flat (brute force, float32 copy)", lambda n, d, p: "Flat")
_register_faiss("hnsw", "FAISS HNSW graph over float32 (tunes efSearch)", lambda n, d, p: f"HNSW{p.hnsw_m},Flat")
_register_faiss("ivf", "FAISS inverted file over float32 (tunes nprobe)", lambda n, d, p: f"IVF{ivf_lists(n, p)},Flat")
_register_faiss("ivfpq", "FAISS inverted file + product quantizer (tunes nprobe)", _ivfpq)
_register_faiss(
    "ivfsq",
    "inverted file + 8-bit scalar quantizer: dim bytes per vector (tunes nprobe)",
    lambda n, d, p: f"IVF{ivf_lists(n, p)},SQ8",
)
_register_faiss("ivfpq-fs", "IVF-PQ, 4-bit fast-scan codes: dim/16 bytes per vector (re-rank deep)", _ivfpq_fast_scan)
_register_faiss("ivfpq-opq", "IVF-PQ after an OPQ rotation, <= dim/8 bytes per vector", _ivfpq_opq)


def _attach_milvus(kind: str, *args, **kwargs) -> VectorIndex:
    from clipmath.search.milvus import open_milvus_index

    return open_milvus_index(kind, *args, **kwargs)


def _milvus_needs_uri(vectors: np.ndarray, params: IndexParams) -> VectorIndex:
    raise IndexKindError("the milvus kind needs a store synced to a collection: --index milvus:URI[#COLLECTION]")


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
