"""What every index returns, and the interface they share (modelled on FAISS: ``search(queries, k)``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index has {dim}")
    return queries


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
