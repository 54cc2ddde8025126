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
from clipmath.search.params import IndexParams


class IndexKindError(ClipmathError):
    """An index kind name is unknown or its options do not fit."""


@dataclass(frozen=True)
class IndexKindSpec:
    """One index kind: what it is, whether it is approximate, how to build it."""

    name: str
    summary: str
    approximate: bool
    build: Callable[[np.ndarray, IndexParams], VectorIndex]
    faiss_description: Callable[[int, int, IndexParams], str] | None = None  # FAISS: (n, dim, params) -> string
    #: ``(path, kind, params, vectors) -> index``: a built index saved next to the store is reopened with this
    #: (``None``: the kind is rebuilt on every open, as exact search is)
    load: Callable[..., VectorIndex] | None = None
    #: kinds served by an engine outside this process (``milvus:URI``): ``(kind, vectors, ids, params, identity,
    #: state) -> index`` over a store snapshot, nothing built here
    attach: Callable[..., VectorIndex] | None = None


#: Every index kind; built-ins are registered by ``clipmath.search.builtin_kinds``.
INDEX_KINDS: Registry[IndexKindSpec] = Registry(
    "index kind", error=IndexKindError, builtins="clipmath.search.builtin_kinds"
)

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
    return spec.faiss_description(n, dim, params) if spec.faiss_description is not None else kind


def _faiss_builder(name: str, factory: Callable[[int, int, IndexParams], str]) -> Callable:
    def build(vectors: np.ndarray, params: IndexParams) -> VectorIndex:
        from clipmath.search.faiss_index import FaissIndex

        n, dim = vectors.shape
        return FaissIndex.build(vectors, name, params, factory=factory(n, dim, params))

    return build


def _load_faiss(path, kind: str, params: IndexParams, vectors: np.ndarray | None) -> VectorIndex:
    from clipmath.search.faiss_index import FaissIndex

    return FaissIndex.load(path, kind, params, vectors)


def register_faiss_kind(name: str, summary: str, factory: Callable[[int, int, IndexParams], str]) -> None:
    spec = IndexKindSpec(name, summary, name != "flat", _faiss_builder(name, factory), factory, load=_load_faiss)
    INDEX_KINDS.register(name, spec)
