"""Near-duplicate photos of a store: groups of items whose vectors are near-identical, with the copy to keep.

Nothing is deleted or moved: the report lists each group, best copy first (most pixels, then the largest file,
then the first id), for a person or a script to act on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from clipmath.search.duplicates import duplicate_groups
from clipmath.search.params import IndexParams
from clipmath.store.gallery import Gallery
from clipmath.store.records import ItemRecord


@dataclass(frozen=True)
class DuplicateCopy:
    id: str
    path: str
    width: int | None
    height: int | None
    size: int


@dataclass
class DuplicateReport:
    """``groups[i][0]`` is the copy suggested to keep; ``score``: each group's weakest joining similarity."""

    store: str
    model: str
    threshold: float
    items: int
    groups: list[list[DuplicateCopy]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def redundant(self) -> int:
        """Copies beyond the one kept in each group."""
        return sum(len(group) - 1 for group in self.groups)

    def write_csv(self, out: IO[str]) -> None:
        """One row per copy: group, keep (1 for the suggested copy), score, id, path, width, height, bytes."""
        writer = csv.writer(out)
        writer.writerow(["group", "keep", "score", "id", "path", "width", "height", "bytes"])
        for number, (group, score) in enumerate(zip(self.groups, self.scores), start=1):
            for rank, copy in enumerate(group):
                writer.writerow([number, int(rank == 0), f"{score:.4f}", copy.id, copy.path, copy.width or "",
                                 copy.height or "", copy.size])  # fmt: skip


def find_duplicates(
    store: str | Path,
    threshold: float = 0.95,
    neighbours: int = 10,
    kind: str = "exact",
    params: IndexParams | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DuplicateReport:
    """Groups of near-duplicate items of ``store`` (cosine ≥ ``threshold`` between their vectors), best copy first;
    ``kind`` is the index the self-join searches with (an approximate kind for millions of items)."""
    with Gallery.open(store) as gallery:
        snapshot = gallery.snapshot()
        found = duplicate_groups(snapshot.vectors, threshold, neighbours, kind, params, progress)
        report = DuplicateReport(str(store), gallery.model_id, threshold, len(snapshot))
        for group in found:
            records = [gallery.record(snapshot.ids[row]) for row in group.rows]
            copies = [_copy(record, snapshot.path_of(record.id)) for record in records if record is not None]
            report.groups.append(sorted(copies, key=_keep_order))
            report.scores.append(group.score)
    return report


def _copy(record: ItemRecord, path: Path) -> DuplicateCopy:
    return DuplicateCopy(record.id, str(path), record.width, record.height, record.size)


def _keep_order(copy: DuplicateCopy) -> tuple:
    return (-((copy.width or 0) * (copy.height or 0)), -copy.size, copy.id)
