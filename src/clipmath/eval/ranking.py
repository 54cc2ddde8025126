"""Turn query-gallery similarities into rankings, keeping memory bounded and ties deterministic.

Two sources of similarities implement :class:`ScoreSource`:

* :class:`ScoreMatrix`: a dense ``(queries, gallery)`` array (a NumPy array or ``np.memmap``), read a block of
  query rows at a time;
* :class:`EmbeddingScores`: query vectors against gallery vectors (inner product, i.e. cosine for L2-normalised
  vectors), scored one block of queries at a time, so the full matrix never exists: a block stays near 64 MB
  whatever the sizes (1000s of queries x 100k+ images). A prebuilt :class:`clipmath.search.VectorIndex` (FAISS)
  can do the search instead, but only the exact search here guarantees the tie rule below.

Only the top ``k`` rows per query are kept (``k = 50`` covers every official metric).

**Tie rule**: a ranking is a stable sort by score, descending, with equal scores ordered by gallery row (the
order of ``dataset.gallery_ids``). Excluded rows (e.g. the reference image) are removed, not merely demoted;
when fewer than ``k`` rows remain the ranking is shorter and padded with ``-1``. Ties are equalities of the
computed float32 scores; mathematically equal scores can differ in their last bit when BLAS sums in a different
order (another block size, another machine), so only exactly representable ties are portable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:  # clipmath.search imports torch; the registry and metrics must stay light to import
    from clipmath.search import SearchResults, VectorIndex

#: Per query, gallery rows to leave out of its ranking (``None``: none anywhere).
Exclusions = Sequence[Sequence[int]] | None


@runtime_checkable
class ScoreSource(Protocol):
    """Similarities of ``num_queries`` queries to ``num_gallery`` gallery rows (higher is better)."""

    @property
    def num_queries(self) -> int: ...

    @property
    def num_gallery(self) -> int: ...

    def top_k(self, k: int, exclude: Exclusions = None, progress: bool = False) -> SearchResults:
        """Per query, the ``k`` best gallery rows under the tie rule, excluded rows removed; ``-1`` pads."""

    def scores_at(self, query: int, rows: np.ndarray) -> np.ndarray:
        """Scores of query ``query`` against the given gallery ``rows`` (float32)."""


def top_k_of_row(scores: np.ndarray, k: int, excluded: Sequence[int] = ()) -> np.ndarray:
    """Gallery rows of the ``k`` best scores in one row of scores (tie rule of this module), excluded removed."""
    scores = np.asarray(scores, dtype=np.float32)
    _check_finite(scores)
    banned = {int(r) for r in excluded}
    take = min(len(scores), k + len(banned))
    if take <= 0:
        return np.empty(0, dtype=np.int64)
    if take < len(scores):
        kth = np.partition(scores, len(scores) - take)[len(scores) - take]
        candidates = np.nonzero(scores >= kth)[0]  # every row tied with the cut-off stays, so ties resolve exactly
    else:
        candidates = np.arange(len(scores))
    ordered = candidates[np.argsort(-scores[candidates], kind="stable")]
    if banned:
        ordered = ordered[~np.isin(ordered, list(banned))]
    return ordered[:k].astype(np.int64)


def top_k_of_block(block: np.ndarray, k: int, exclude: Exclusions = None) -> list[np.ndarray]:
    """:func:`top_k_of_row` for every row of a ``(queries, gallery)`` block, vectorised.

    Rows whose cut-off score is tied with rows outside the candidates fall back to :func:`top_k_of_row`, so the
    tie rule holds exactly.
    """
    block = np.asarray(block, dtype=np.float32)
    _check_finite(block)
    n_rows, n_cols = block.shape
    extra = 0 if exclude is None else max((len(e) for e in exclude), default=0)
    take = min(n_cols, k + extra)
    if take <= 0 or n_rows == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(n_rows)]
    if take < n_cols:
        candidates = np.argpartition(-block, take - 1, axis=1)[:, :take]
    else:
        candidates = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    cand_scores = np.take_along_axis(block, candidates, axis=1)
    order = np.lexsort((candidates, -cand_scores), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    ambiguous = np.zeros(n_rows, dtype=bool)
    if take < n_cols:
        cut = np.take_along_axis(cand_scores, order, axis=1)[:, -1]
        ambiguous = (block >= cut[:, None]).sum(axis=1) > take
    out = []
    for i in range(n_rows):
        banned = () if exclude is None else exclude[i]
        if ambiguous[i]:
            out.append(top_k_of_row(block[i], k, banned))
            continue
        rows = candidates[i]
        if len(banned):
            rows = rows[~np.isin(rows, np.asarray(banned, dtype=np.int64))]
        out.append(rows[:k].astype(np.int64))
    return out


def _check_finite(scores: np.ndarray) -> None:
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; check the query and gallery vectors")


def rank_rows(scores: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """``rows`` ordered by ``scores`` (aligned with ``rows``) under the tie rule: desc, then lower row first."""
    rows = np.asarray(rows, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    _check_finite(scores)
    return rows[np.lexsort((rows, -scores))]


def _chunk_rows(num_gallery: int, chunk: int) -> int:
    """Queries per block: ``chunk`` if set, else as many as keep a block near 64 MB of float32."""
    return chunk or max(1, min(1024, (1 << 24) // max(1, num_gallery)))


def _rank_blocks(num_queries: int, chunk: int, block_of, k: int, exclude: Exclusions, progress: bool) -> SearchResults:
    from clipmath.search.base import pad_results

    rows_out: list[np.ndarray] = []
    scores_out: list[np.ndarray] = []
    for start in tqdm(range(0, num_queries, chunk), desc="ranking", unit="block", disable=not progress):
        block = block_of(start, min(num_queries, start + chunk))
        excluded = None if exclude is None else exclude[start : start + len(block)]
        for row_scores, best in zip(block, top_k_of_block(block, k, excluded)):
            rows_out.append(best)
            scores_out.append(row_scores[best])
    return pad_results(scores_out, rows_out, k)


@dataclass
class ScoreMatrix:
    """A dense ``(queries, gallery)`` score array, read ``query_chunk`` rows at a time (memmap friendly).

    ``query_chunk`` 0 picks a block of about 64 MB.
    """

    scores: np.ndarray
    query_chunk: int = 0

    def __post_init__(self) -> None:
        if self.scores.ndim != 2:
            raise ValueError(f"a score matrix is 2-D (queries, gallery), got shape {self.scores.shape}")

    @property
    def num_queries(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_gallery(self) -> int:
        return int(self.scores.shape[1])

    def top_k(self, k: int, exclude: Exclusions = None, progress: bool = False) -> SearchResults:
        chunk = _chunk_rows(self.num_gallery, self.query_chunk)
        return _rank_blocks(
            self.num_queries, chunk, lambda a, b: np.asarray(self.scores[a:b], dtype=np.float32), k, exclude, progress
        )

    def scores_at(self, query: int, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.scores[query], dtype=np.float32)[np.asarray(rows, dtype=np.int64)]


@dataclass
class EmbeddingScores:
    """Inner products of ``queries`` (Q, D) with ``gallery`` (G, D) vectors, ``query_chunk`` queries at a time.

    Only a ``(query_chunk, G)`` block of scores exists at once (``query_chunk`` 0: about 64 MB). ``index``: search
    a prebuilt :class:`clipmath.search.VectorIndex` over ``gallery`` instead (e.g. FAISS for very large
    galleries); the exact search here is what guarantees the tie rule.
    """

    queries: np.ndarray
    gallery: np.ndarray
    index: VectorIndex | None = None
    query_chunk: int = 0

    def __post_init__(self) -> None:
        self.queries = np.ascontiguousarray(np.atleast_2d(self.queries), dtype=np.float32)
        if self.queries.shape[1] != self.gallery.shape[1]:
            raise ValueError(
                f"query vectors have dimension {self.queries.shape[1]}, gallery vectors {self.gallery.shape[1]}"
            )
        if np.isnan(self.queries).any():
            raise ValueError("query vectors contain NaN")

    @property
    def num_queries(self) -> int:
        return int(self.queries.shape[0])

    @property
    def num_gallery(self) -> int:
        return int(self.gallery.shape[0])

    def top_k(self, k: int, exclude: Exclusions = None, progress: bool = False) -> SearchResults:
        if self.index is not None:
            return self.index.search(self.queries, k, exclude)
        gallery = np.asarray(self.gallery, dtype=np.float32)
        chunk = _chunk_rows(self.num_gallery, self.query_chunk)
        return _rank_blocks(self.num_queries, chunk, lambda a, b: self.queries[a:b] @ gallery.T, k, exclude, progress)

    def scores_at(self, query: int, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self.gallery[rows], dtype=np.float32) @ self.queries[query]


def score_source_for(scores: ScoreSource | np.ndarray, dataset: Any, what: str) -> ScoreSource:
    """:func:`as_score_source`, checked to cover every query of ``dataset`` against its whole gallery (``what``
    names the dataset in the error)."""
    source = as_score_source(scores)
    expected = (len(dataset.queries), len(dataset.gallery_ids))
    if (source.num_queries, source.num_gallery) != expected:
        raise ValueError(
            f"scores cover {source.num_queries} queries x {source.num_gallery} gallery images; "
            f"{what} has {expected[0]} x {expected[1]}"
        )
    return source


def as_score_source(scores: ScoreSource | np.ndarray) -> ScoreSource:
    """Wrap a dense array in :class:`ScoreMatrix`; pass a :class:`ScoreSource` through."""
    if isinstance(scores, np.ndarray):
        return ScoreMatrix(scores)
    if isinstance(scores, ScoreSource):
        return scores
    raise TypeError(f"expected a (queries, gallery) array or a ScoreSource, got {type(scores).__name__}")
