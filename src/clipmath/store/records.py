"""What a store hands out: item metadata, store facts, and a committed snapshot of ids and vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipmath.store.videoframes import split_frame_id


@dataclass(frozen=True)
class ItemRecord:
    """One gallery item's metadata. ``id`` is the file's path relative to the store's image root (POSIX)."""

    id: str
    sha256: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    extra: dict | None = None


@dataclass(frozen=True)
class StoreInfo:
    path: Path
    model_id: str
    backend: str
    dim: int
    preprocessing: str
    root: str
    count: int
    bad_files: int
    vector_rows: int
    size_bytes: int
    created: str
    vector_dtype: str = "float32"


@dataclass
class GallerySnapshot:
    """The committed state at one moment: ``vectors[i]`` is the embedding of ``ids[i]``.

    ``state`` fingerprints that state (ids, their vector rows, the vector file): it changes whenever anything a
    reader could see changes, including a file re-indexed under the same name.
    """

    ids: list[str]
    vectors: np.ndarray  # (N, D) float32; a read-only memmap when rows are contiguous
    model_id: str
    root: Path
    state: str = ""
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def path_of(self, item_id: str) -> Path:
        """The file of ``item_id``: for a video frame (``clip.mp4#t=2.000``), the video's."""
        frame = split_frame_id(item_id)
        return self.root / (item_id if frame is None else frame[0])

    def row_of(self, item_id: str) -> int | None:
        """The row of ``item_id`` (None if it is not in the gallery)."""
        if self._row_of is None:
            self._row_of = {name: row for row, name in enumerate(self.ids)}
        return self._row_of.get(item_id)
