"""Near-duplicate groups in a store: an approximate self-join of its vectors (each row's nearest neighbours from a
FAISS index, pairs at or above a cosine threshold, joined into groups), with the best copy of each group suggested.
Nothing is deleted: this only reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import StoreError
from clipmath.search import make_index
from clipmath.store.photometa import PhotoMeta
from clipmath.store.videoframes import split_frame_id

#: Below this many rows the self-join is exact; above, an HNSW graph answers it.
EXACT_UP_TO = 50_000


@dataclass(frozen=True)
class DuplicateGroup:
    ids: list[str]  # best copy first
    best: str
    min_score: float  # the weakest link that joined the group


def duplicate_pairs(
    vectors: np.ndarray, threshold: float, neighbours: int = 8, kind: str | None = None, progress: bool = False
) -> list[tuple[int, int, float]]:
    """``(row, other, score)`` with ``row < other`` for every pair found at or above ``threshold``."""
    if not -1.0 <= threshold <= 1.0:
        raise StoreError(f"the duplicate threshold must be a cosine similarity in [-1, 1], not {threshold}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) < 2:
        return []
    index = make_index(vectors, kind or ("exact" if len(vectors) <= EXACT_UP_TO else "hnsw"))
    depth = min(len(vectors), neighbours + 1)
    pairs: dict[tuple[int, int], float] = {}
    step = 4096
    for start in tqdm(range(0, len(vectors), step), desc="duplicates", disable=not progress):
        found = index.search(vectors[start : start + step], depth)
        for offset, (rows, scores) in enumerate(zip(found.rows, found.scores)):
            row = start + offset
            for other, score in zip(rows.tolist(), scores.tolist()):
                if other >= 0 and other != row and score >= threshold:
                    pairs[(min(row, other), max(row, other))] = float(score)
    return [(a, b, s) for (a, b), s in sorted(pairs.items())]


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
