"""Near-duplicates: groups of vectors whose cosine similarity reaches a threshold (an approximate self-join).

Every vector asks the index for its ``neighbours`` nearest others, in batches (memory bounded by the batch, not by
N²); each pair at or above ``threshold`` joins the two into one group (union–find), so a chain of close copies is
one group. With an approximate index kind (``hnsw``, ``ivfsq``...) the join scales to millions of vectors; a pair
the index misses is a group not found, never a wrong one (every reported pair's score is re-computed exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipmath.errors import SearchError
from clipmath.search.params import IndexParams

#: queries per index call (bounds the memory of one batch of results)
BATCH = 4096


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows of near-identical vectors; ``score`` is the lowest similarity of the pairs that joined them."""

    rows: tuple[int, ...]
    score: float


def duplicate_groups(
    vectors: np.ndarray,
    threshold: float = 0.95,
    neighbours: int = 10,
    kind: str = "exact",
    params: IndexParams | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicateGroup]:
    """Groups (two rows or more) of ``vectors`` (L2-normalised rows) joined by similarities ≥ ``threshold``, largest
    first. ``neighbours``: how many nearest others each row looks at (a group larger than this is still found
    through its chains). ``progress(done, total)`` is called after every batch."""
    from clipmath.search import make_index

    if not -1.0 <= threshold <= 1.0 or not np.isfinite(threshold):
        raise SearchError(f"'threshold' is a cosine similarity between -1 and 1, not {threshold}")
    if isinstance(neighbours, bool) or int(neighbours) < 1:
        raise SearchError(f"'neighbours' must be at least 1, not {neighbours}")
    n = len(vectors)
    parent = np.arange(n)
    weakest: dict[int, float] = {}
    if n < 2:
        return []
    index = make_index(vectors, kind, params)
    k = min(int(neighbours) + 1, n)  # +1: a row finds itself
    for start in range(0, n, BATCH):
        block = np.asarray(vectors[start : start + BATCH], dtype=np.float32)
        found = index.search(block, k, [[start + i] for i in range(len(block))])
        for offset, (rows, scores) in enumerate(zip(found.rows, found.scores)):
            row = start + offset
            for other, score in zip(rows.tolist(), scores.tolist()):
                if other < 0 or score < threshold:
                    continue
                exact = float(np.dot(np.asarray(vectors[row], np.float32), np.asarray(vectors[other], np.float32)))
                if exact >= threshold:
                    _join(parent, row, other, exact, weakest)
        if progress is not None:
            progress(min(start + BATCH, n), n)
    members: dict[int, list[int]] = {}
    for row in range(n):
        members.setdefault(_root(parent, row), []).append(row)
    groups = [DuplicateGroup(tuple(rows), weakest[root]) for root, rows in members.items() if len(rows) > 1]
    return sorted(groups, key=lambda g: (-len(g.rows), -g.score, g.rows[0]))


def _root(parent: np.ndarray, row: int) -> int:
    while parent[row] != row:
        parent[row] = parent[parent[row]]
        row = int(parent[row])
    return row


def _join(parent: np.ndarray, a: int, b: int, score: float, weakest: dict[int, float]) -> None:
    root_a, root_b = _root(parent, a), _root(parent, b)
    low = min(score, weakest.pop(root_a, score), weakest.pop(root_b, score) if root_b != root_a else score)
    if root_a != root_b:
        parent[max(root_a, root_b)] = min(root_a, root_b)
    weakest[min(root_a, root_b)] = low
