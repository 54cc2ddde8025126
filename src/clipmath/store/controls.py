"""Query controls, declared once for every front end: a score cutoff, sorting, filters on photo metadata, paging.

Sorting by date orders every hit over ``min_score`` when a cutoff is set, else the best ``offset + k`` by score.
Filters are applied before ranking. An exact index ranks only the rows that pass (so ``k`` results come back
whenever ``k`` rows pass). An approximate index cannot be restricted, so it is searched deeper, doubling the depth
until ``offset + k`` hits pass or the whole gallery has been ranked; :class:`ResultPage` says which. ``per_video``
keeps only the best frame of each video: the ranked list is collapsed before hits are counted, so the deeper search
also fills a page with distinct videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipmath.errors import ClipmathError
from clipmath.search import INDEX_KINDS, SearchHit, VectorIndex
from clipmath.store.filters import SORTS, MetaColumns, QueryControls
from clipmath.store.photometa import PhotoMeta

__all__ = ["SORTS", "MetaColumns", "QueryControls", "ResultPage", "controlled_search", "is_approximate"]


@dataclass
class ResultPage:
    """One page of results. ``passed``: hits that passed the filters and cutoff up to the depth searched;
    ``complete``: the page is full, or every row of the gallery was considered (no hit was missed);
    ``exhausted``: every passing row was considered."""

    hits: list[SearchHit]
    passed: int
    searched_depth: int
    complete: bool
    exhausted: bool
    #: The approximate index could not reach every row that passes, so those rows were scored exactly.
    exact_fallback: bool = False


def is_approximate(index: VectorIndex) -> bool:
    """Whether ``index`` may miss rows (its kind says so; a FAISS factory string is taken as approximate)."""
    try:
        return INDEX_KINDS.get(index.kind).approximate
    except ClipmathError:
        return True


def controlled_search(
    index: VectorIndex,
    ids: list[str],
    query: np.ndarray,
    k: int,
    controls: QueryControls,
    metas: dict[str, PhotoMeta],
    exclude: list[int],
    approximate: bool,
    vectors: np.ndarray | None = None,
    columns: MetaColumns | None = None,
    where: object | None = None,
) -> ResultPage:
    """One query's page of ``k`` hits under ``controls`` (see the module's docstring). ``vectors``: the rows the
    index holds (default: the index's own), scored directly when an exact ranking of the passing rows is needed;
    ``columns``: ``metas`` as arrays for ``ids`` (:meth:`MetaColumns.of`), for a vectorised filter. ``where``: a
    filter the index answers itself (``milvus:URI``), applied before ``controls``; an index answering fewer rows
    than asked has no more that pass it, and no exact fallback can stand in for it."""
    want = controls.offset + k
    allowed = controls.mask(ids, metas, columns) if controls.filters else np.ones(len(ids), dtype=bool)
    allowed[np.asarray(exclude, dtype=np.int64)] = False
    query = np.asarray(query, dtype=np.float32).reshape(1, -1)
    vectors = vectors if vectors is not None else getattr(index, "vectors", None)
    if controls.filters and not approximate and vectors is not None and where is None:
        return _rank_rows(vectors, np.flatnonzero(allowed), ids, query[0], k, controls, metas, 0)
    all_above = controls.sort == "date" and controls.min_score is not None  # every hit over the cutoff, by date
    depth = min(len(ids), max(want + len(exclude), 64 if approximate else 0, want * (4 if controls.filters else 1)))
    ceiling = min(len(ids), getattr(index, "max_depth", None) or len(ids))  # the most rows one search returns
    while True:
        result = index.search(query, depth, where=where) if where is not None else index.search(query, depth)
        scores, found = result.scores[0], result.rows[0]
        ranked = [(int(r), float(s)) for r, s in zip(found, scores) if r >= 0 and allowed[r]]
        ranked = _best_per_video(ranked, ids, metas) if controls.per_video else ranked
        passed = sum(controls.min_score is None or s >= controls.min_score for _, s in ranked)
        below = controls.min_score is not None and len(scores) > 0 and scores[-1] < controls.min_score
        if passed >= want and not all_above or below:
            return _page(ranked, ids, k, controls, metas, depth, bool(below))
        if where is not None:  # fewer rows than asked: none further passes the index's own filter
            short = int((found >= 0).sum()) < min(depth, ceiling)
            if short or depth >= ceiling:
                return _page(ranked, ids, k, controls, metas, depth, short)
        if depth >= len(ids):
            if int((found >= 0).sum()) == len(ids):
                return _page(ranked, ids, k, controls, metas, depth, True)
            if vectors is None:  # the index cannot reach every row (e.g. IVF probing few lists): say so
                return _page(ranked, ids, k, controls, metas, depth, False)
            return _rank_rows(vectors, np.flatnonzero(allowed), ids, query[0], k, controls, metas, depth)
        depth = min(len(ids), depth * 2)


def _rank_rows(
    vectors: np.ndarray,
    rows: np.ndarray,
    ids: list[str],
    query: np.ndarray,
    k: int,
    controls: QueryControls,
    metas: dict[str, PhotoMeta],
    depth: int,
) -> ResultPage:
    """Score ``rows`` of ``vectors`` exactly (the rows that pass the filters); ``depth``: how deep an approximate
    search went first (0: none)."""
    scores = np.asarray(vectors[rows], dtype=np.float32) @ query if len(rows) else np.zeros(0, np.float32)
    order = np.lexsort((rows, -scores))
    ranked = [(int(rows[i]), float(scores[i])) for i in order]
    ranked = _best_per_video(ranked, ids, metas) if controls.per_video else ranked
    page = _page(ranked, ids, k, controls, metas, len(ids), True)
    page.exact_fallback = depth > 0
    return page


def _page(
    ranked: list[tuple[int, float]],
    ids: list[str],
    k: int,
    controls: QueryControls,
    metas: dict[str, PhotoMeta],
    depth: int,
    exhausted: bool,
) -> ResultPage:
    if controls.min_score is not None:
        ranked = [x for x in ranked if x[1] >= controls.min_score]
    if controls.sort == "date":
        if controls.min_score is None:  # the best offset + k by score, shown by date
            ranked = ranked[: controls.offset + k]
        ranked = sorted(ranked, key=lambda x: metas[ids[x[0]]].taken if ids[x[0]] in metas else "", reverse=True)
    chosen = ranked[controls.offset : controls.offset + k]
    hits = [SearchHit(ids[row], score, controls.offset + rank) for rank, (row, score) in enumerate(chosen)]
    return ResultPage(hits, len(ranked), depth, len(chosen) == k or exhausted, exhausted)


def _best_per_video(ranked: list[tuple[int, float]], ids: list[str], metas: dict[str, PhotoMeta]):
    """``ranked`` (best first) without the frames of a video after its best one; photos are all kept."""
    seen: set[str] = set()
    kept = []
    for row, score in ranked:
        meta = metas.get(ids[row])
        video = meta.video if meta is not None else None
        if video is None or video not in seen:
            kept.append((row, score))
            if video is not None:
                seen.add(video)
    return kept
