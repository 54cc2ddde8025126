"""Near-duplicate groups in a store: a self-join of its vectors (every pair at or above a cosine threshold, joined
into groups), with the best copy of each group suggested. Nothing is deleted: this only reports.

Up to :data:`EXACT_UP_TO` rows the join is exact (blocks of the similarity matrix). Above, it is clustered: k-means
(FAISS) splits the rows into about ``4·sqrt(n)`` lists, each row is filed under its ``probes`` nearest centroids,
and each list's own rows are compared, as one matrix product, with every row filed under it. A pair is found when
one row's nearest list is among the other's ``probes`` lists, which near-duplicates almost always are; the cost
grows as ``probes · n^1.5 · dim`` instead of ``n² · dim``, and every score is an exact inner product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from clipmath.options import check_fields, setting
from clipmath.store.photometa import PhotoMeta
from clipmath.store.videoframes import split_frame_id

#: Below this many rows the self-join is exact; above, it is clustered.
EXACT_UP_TO = 20_000
#: A block of the join scores at most ``BLOCK × COLUMNS`` pairs at once (32 MB of float32).
BLOCK, COLUMNS = 1024, 8192


@dataclass(frozen=True)
class DuplicateSearch:
    """How near-duplicates are looked for (every front end reads its options from here)."""

    threshold: float = setting(0.95, "Cosine similarity that makes two images a pair.", minimum=-1.0, maximum=1.0)
    probes: int = setting(
        8, "Clusters each image is compared in, above 20,000 images (more finds more pairs, slower).", minimum=1
    )
    seed: int = setting(0, "Seed of the clustering (above 20,000 images).")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class DuplicateGroup:
    ids: list[str]  # best copy first
    best: str
    min_score: float  # the weakest link that joined the group


def duplicate_pairs(
    vectors: np.ndarray, search: DuplicateSearch | float = DuplicateSearch(), progress: bool = False
) -> list[tuple[int, int, float]]:
    """``(row, other, score)`` with ``row < other`` for every pair found at or above the threshold (``search`` may
    be a bare threshold)."""
    if not isinstance(search, DuplicateSearch):
        search = DuplicateSearch(threshold=float(search))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) < 2:
        return []
    if len(vectors) <= EXACT_UP_TO:
        keys, scores = _exact_join(vectors, search.threshold, progress)
    else:
        keys, scores = _clustered_join(vectors, search, progress)
    keys, first = np.unique(keys, return_index=True)
    n = len(vectors)
    return [(int(k // n), int(k % n), float(s)) for k, s in zip(keys.tolist(), scores[first].tolist())]


def _join(
    vectors: np.ndarray, rows: np.ndarray, cols: np.ndarray, threshold: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pair keys ``low * n + high`` and scores of every (row, col) pair at or above ``threshold``, in blocks of at
    most ``BLOCK × COLUMNS`` scores."""
    n = len(vectors)
    keys, scores = [], []
    for r0 in range(0, len(rows), BLOCK):
        left = rows[r0 : r0 + BLOCK]
        for c0 in range(0, len(cols), COLUMNS):
            right = cols[c0 : c0 + COLUMNS]
            block = vectors[left] @ vectors[right].T
            r, c = np.nonzero(block >= threshold)
            a, b = left[r].astype(np.int64), right[c].astype(np.int64)
            keep = a != b
            keys.append(np.minimum(a[keep], b[keep]) * n + np.maximum(a[keep], b[keep]))
            scores.append(block[r[keep], c[keep]])
    return keys, scores


def _exact_join(vectors: np.ndarray, threshold: float, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(vectors)
    keys, scores = [np.empty(0, np.int64)], [np.empty(0, np.float32)]
    for start in tqdm(range(0, n, BLOCK), desc="duplicates", unit="block", disable=not progress or n <= BLOCK):
        found = _join(vectors, np.arange(start, min(n, start + BLOCK)), np.arange(start, n), threshold)
        keys += found[0]  # the upper triangle (columns from the block's first row): each pair once
        scores += found[1]
    return np.concatenate(keys), np.concatenate(scores)


def _clustered_join(vectors: np.ndarray, search: DuplicateSearch, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    n, dim = vectors.shape
    lists = max(1, min(65536, int(4 * math.sqrt(n)), n // 39))
    probes = min(search.probes, lists)
    kmeans = faiss.Kmeans(dim, lists, niter=5, seed=search.seed, spherical=True, max_points_per_centroid=16)
    kmeans.train(vectors)
    _, nearest = kmeans.index.search(vectors, probes)  # (n, probes) list numbers, nearest first
    home = nearest[:, 0]
    filed = nearest.reshape(-1).argsort(kind="stable")  # rows grouped by list, over all their probes
    filed_lists = nearest.reshape(-1)[filed]
    filed_rows = filed // probes
    bounds = np.searchsorted(filed_lists, np.arange(lists + 1))
    by_home = np.argsort(home, kind="stable")
    home_bounds = np.searchsorted(home[by_home], np.arange(lists + 1))
    keys, scores = [np.empty(0, np.int64)], [np.empty(0, np.float32)]
    for number in tqdm(range(lists), desc="duplicates", unit="cluster", disable=not progress):
        rows = by_home[home_bounds[number] : home_bounds[number + 1]]
        cols = filed_rows[bounds[number] : bounds[number + 1]]
        if len(rows) == 0 or len(cols) < 2:
            continue
        found = _join(vectors, rows, cols, search.threshold)
        keys += found[0]
        scores += found[1]
    return np.concatenate(keys), np.concatenate(scores)


def duplicate_groups(
    ids: list[str], pairs: list[tuple[int, int, float]], metas: dict[str, PhotoMeta]
) -> list[DuplicateGroup]:
    """Join pairs into groups (connected rows); the best copy is the one with the most pixels, then the largest
    file, then the earliest taken. Two frames of one video are not a pair (a shot's frames look alike)."""
    pairs = [(a, b, s) for a, b, s in pairs if not _same_video(ids[a], ids[b])]
    parent = list(range(len(ids)))

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    weakest: dict[int, float] = {}
    for a, b, score in pairs:
        ra, rb = root(a), root(b)
        low = min(score, weakest.pop(ra, 1.0), weakest.pop(rb, 1.0) if rb != ra else 1.0)
        parent[rb] = ra
        weakest[ra] = low
    members: dict[int, list[str]] = {}
    for a, b, _ in pairs:
        for row in (a, b):
            members.setdefault(root(row), [])
    for row in range(len(ids)):
        if root(row) in members:
            members[root(row)].append(ids[row])

    def quality(item_id: str) -> tuple:
        meta = metas.get(item_id)
        if meta is None:
            return (0, 0, "")
        return (-(meta.width or 0) * (meta.height or 0), -meta.size_bytes, meta.taken, item_id)

    groups = []
    for group_root, names in members.items():
        ordered = sorted(names, key=quality)
        groups.append(DuplicateGroup(ordered, ordered[0], round(weakest.get(group_root, 1.0), 6)))
    return sorted(groups, key=lambda g: (-len(g.ids), g.best))


def _same_video(a: str, b: str) -> bool:
    frame_a, frame_b = split_frame_id(a), split_frame_id(b)
    return frame_a is not None and frame_b is not None and frame_a[0] == frame_b[0]
