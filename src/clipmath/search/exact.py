"""Exact top-k by blocked matrix products: memory stays bounded for galleries of any size (memmaps included)."""

from __future__ import annotations

import numpy as np

from clipmath.search.base import Exclusions, SearchResults, VectorIndex, check_queries, pad_results


def _top_k_sorted(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of one query's candidates, by score desc then row asc."""
    if len(scores) > k:
        # keep every candidate tied with the k-th score so the row tie-break stays exact
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


class ExactIndex(VectorIndex):
    """Brute-force inner product. ``block_rows`` gallery rows and ``query_batch`` queries are scored at a time."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, block_rows: int = 65536, query_batch: int = 256) -> None:
        self.vectors = vectors
        self.block_rows = block_rows
        self.query_batch = query_batch

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int, exclude: Exclusions = None) -> SearchResults:
        queries = check_queries(queries, self.vectors.shape[1])
        k = max(1, int(k))
        all_scores: list[np.ndarray] = []
        all_rows: list[np.ndarray] = []
        for q0 in range(0, len(queries), self.query_batch):
            batch = queries[q0 : q0 + self.query_batch]
            excluded = None if exclude is None else exclude[q0 : q0 + len(batch)]
            scores, rows = self._search_batch(batch, k, excluded)
            all_scores += scores
            all_rows += rows
        return pad_results(all_scores, all_rows, k)

    def _search_batch(self, queries: np.ndarray, k: int, exclude: Exclusions) -> tuple[list, list]:
        best_scores = [np.empty(0, np.float32) for _ in queries]
        best_rows = [np.empty(0, np.int64) for _ in queries]
        for start in range(0, self.ntotal, self.block_rows):
            block = np.asarray(self.vectors[start : start + self.block_rows], dtype=np.float32)
            scores = queries @ block.T
            if exclude is not None:
                for qi, rows in enumerate(exclude):
                    local = [r - start for r in rows if start <= r < start + len(block)]
                    scores[qi, local] = -np.inf
            take = min(k, scores.shape[1])
            part = (
                np.argpartition(-scores, take - 1, axis=1)[:, :take]
                if take < scores.shape[1]
                else np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            )
            for qi in range(len(queries)):
                cand_rows = part[qi]
                cand_scores = scores[qi, cand_rows]
                # argpartition may split a tie at the boundary: add back every row tied with the k-th score
                if take < scores.shape[1]:
                    kth = cand_scores.min()
                    cand_rows = np.nonzero(scores[qi] >= kth)[0]
                    cand_scores = scores[qi, cand_rows]
                valid = np.isfinite(cand_scores)
                merged_scores = np.concatenate([best_scores[qi], cand_scores[valid]])
                merged_rows = np.concatenate([best_rows[qi], cand_rows[valid].astype(np.int64) + start])
                best_scores[qi], best_rows[qi] = _top_k_sorted(merged_scores, merged_rows, k)
        return best_scores, best_rows


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, exclude: Exclusions = None) -> SearchResults:
    """One-shot exact search (see :class:`ExactIndex`)."""
    return ExactIndex(vectors).search(queries, k, exclude)
