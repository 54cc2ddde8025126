"""What every index returns, and the interface they share (modelled on FAISS: ``search(queries, k)``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipmath.errors import SearchError

#: Per query, gallery rows that must not be returned (e.g. the reference image itself).
Exclusions = Sequence[Sequence[int]] | None


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    rank: int


@dataclass
class SearchResults:
    """``rows[q, r]`` is the gallery row at rank ``r`` for query ``q`` (-1 where fewer than k exist)."""

    scores: np.ndarray  # (B, k) float32, descending
    rows: np.ndarray  # (B, k) int64

    def hits(self, ids: Sequence[str]) -> list[list[SearchHit]]:
        """Resolve rows to gallery ids, dropping padding."""
        return [
            [SearchHit(ids[row], float(score), rank) for rank, (row, score) in enumerate(zip(rows, scores)) if row >= 0]
            for rows, scores in zip(self.rows.tolist(), self.scores.tolist())
        ]


class VectorIndex(ABC):
    """An inner-product index over L2-normalised vectors (so scores are cosine similarities)."""

    kind: str = ""

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of indexed vectors."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, exclude: Exclusions = None) -> SearchResults:
        """Top-``k`` rows per query by inner product, best first; ties broken by lower row first."""


def pad_results(scores: list[np.ndarray], rows: list[np.ndarray], k: int) -> SearchResults:
    """Stack per-query results, padding short ones with score -inf and row -1."""
    out_scores = np.full((len(scores), k), -np.inf, dtype=np.float32)
    out_rows = np.full((len(rows), k), -1, dtype=np.int64)
    for i, (s, r) in enumerate(zip(scores, rows)):
        out_scores[i, : len(s)] = s[:k]
        out_rows[i, : len(r)] = r[:k]
    return SearchResults(out_scores, out_rows)


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """``queries`` as a (B, dim) float32 array; a query that is not finite or is zero is a one-line SearchError
    (it would score every row NaN, or every row 0: no ranking at all)."""
    queries = np.atleast_2d(np.asarray(queries))
    if queries.ndim != 2:
        raise SearchError(f"queries must be a 2-d array (queries x dimension), not of shape {queries.shape}")
    if queries.shape[1] != dim:
        raise SearchError(f"queries have dimension {queries.shape[1]}, the index has {dim}")
    with np.errstate(over="ignore", invalid="ignore"):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        finite = np.isfinite(queries).all(axis=1)
    if not finite.all():
        raise SearchError(f"query {int(np.argmin(finite))} holds NaN or infinity: it ranks nothing")
    zero = ~(np.abs(queries).max(axis=1) > 0) if len(queries) else np.zeros(0, bool)
    if zero.any():
        raise SearchError(
            f"query {int(np.argmax(zero))} is the zero vector (its terms cancel out, e.g. +x.jpg -x.jpg): "
            "it matches every image equally"
        )
    return queries


def check_k(k: object) -> int:
    """``k`` as an int of at least 1, else a one-line SearchError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SearchError(f"'k' must be a whole number of at least 1, not {k!r}")
    return int(k)


def check_gallery(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` if it is a (rows, dimension) array with a dimension, else a one-line SearchError."""
    shape = getattr(vectors, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] < 1:
        raise SearchError(f"a gallery must be a 2-d array (rows x dimension), not of shape {shape}")
    return vectors


def usable_rows(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop candidates whose score is not finite (a gallery row holding NaN or infinity ranks nowhere)."""
    finite = np.isfinite(scores)
    return (scores, rows) if finite.all() else (scores[finite], rows[finite])


def unique_rows(rows: np.ndarray) -> np.ndarray:
    """``rows`` sorted, each once (as ``np.unique``, which in NumPy 2.x is ~10x slower on a few thousand ints)."""
    rows = np.sort(rows)
    return rows[np.concatenate(([True], rows[1:] != rows[:-1]))] if len(rows) else rows


def top_k_sorted(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of one query's candidates, by score desc then row asc."""
    if len(scores) > k:
        # keep every candidate tied with the k-th score so the row tie-break stays exact
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]
