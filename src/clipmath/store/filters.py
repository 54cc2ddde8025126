"""The query controls every front end offers, declared once: a score cutoff, sorting, filters on photo metadata,
paging (importing this module loads no model or index code; :mod:`clipmath.store.controls` applies them)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from clipmath.errors import ComposeError
from clipmath.options import check_fields, setting
from clipmath.store.photometa import PhotoMeta

SORTS = ("score", "date")


@dataclass(frozen=True)
class QueryControls:
    min_score: float | None = setting(None, "Drop results scoring below this cosine similarity.", minimum=-1, maximum=1)
    sort: str = setting("score", "Order of the results: by score, or by date taken (newest first).", choices=SORTS)
    folder: str | None = setting(None, "Only images in this folder (relative to the image root) or below it.")
    glob: str | None = setting(None, "Only images whose id matches this pattern (e.g. '*/2023-*/*.jpg').")
    after: str | None = setting(None, "Only images taken on or after this date (YYYY-MM-DD or ISO 8601).")
    before: str | None = setting(None, "Only images taken before this date (YYYY-MM-DD or ISO 8601).")
    camera: str | None = setting(None, "Only images whose camera (make and model) contains this text.")
    min_size: int | None = setting(None, "Only images at least this many pixels wide and high.", minimum=1)
    offset: int = setting(0, "Skip this many results (paging: the page starts after them).", minimum=0)
    per_video: bool = setting(False, "Only the best frame of each video (the others are not results).")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("after", "before"):
            _date(getattr(self, name), name)

    @property
    def filters(self) -> bool:
        return any(v is not None for v in (self.folder, self.glob, self.after, self.before, self.camera, self.min_size))

    def allows(self, meta: PhotoMeta) -> bool:
        """Whether an item with ``meta`` passes every filter."""
        if self.folder is not None:
            folder = self.folder.strip("/")
            if folder and not (meta.folder == folder or meta.folder.startswith(folder + "/")):
                return False
        if self.glob is not None and not fnmatch.fnmatchcase(meta.id, self.glob):
            return False
        taken = meta.taken[:19]
        if self.after is not None and taken < _date(self.after, "after"):
            return False
        if self.before is not None and taken >= _date(self.before, "before"):
            return False
        if self.camera is not None and self.camera.lower() not in (meta.camera or "").lower():
            return False
        if self.min_size is not None and min(meta.width or 0, meta.height or 0) < self.min_size:
            return False
        return True

    def mask(self, ids: list[str], metas: dict[str, PhotoMeta], columns: MetaColumns | None = None) -> np.ndarray:
        """A boolean per gallery row: whether it passes the filters (vectorised over ``columns`` when given)."""
        if columns is None:
            return np.fromiter((i in metas and self.allows(metas[i]) for i in ids), dtype=bool, count=len(ids))
        keep = columns.known.copy()
        if self.folder is not None and self.folder.strip("/"):
            folder = self.folder.strip("/")
            keep &= (columns.folder == folder) | np.char.startswith(columns.folder, folder + "/")
        if self.glob is not None:
            keep &= np.fromiter((fnmatch.fnmatchcase(i, self.glob) for i in ids), dtype=bool, count=len(ids))
        if self.after is not None:
            keep &= columns.taken >= _date(self.after, "after")
        if self.before is not None:
            keep &= columns.taken < _date(self.before, "before")
        if self.camera is not None:
            keep &= np.char.find(columns.camera, self.camera.lower()) >= 0
        if self.min_size is not None:
            keep &= columns.min_side >= self.min_size
        return keep


@dataclass(frozen=True)
class MetaColumns:
    """The filterable metadata of a snapshot's rows as arrays (built once per committed state)."""

    known: np.ndarray
    folder: np.ndarray
    taken: np.ndarray
    camera: np.ndarray
    min_side: np.ndarray

    @classmethod
    def of(cls, ids: list[str], metas: dict[str, PhotoMeta]) -> MetaColumns:
        rows = [metas.get(i) for i in ids]
        return cls(
            known=np.array([m is not None for m in rows], dtype=bool),
            folder=np.array([m.folder if m else "" for m in rows], dtype=str),
            taken=np.array([m.taken[:19] if m else "" for m in rows], dtype="<U19"),
            camera=np.array([(m.camera or "").lower() if m else "" for m in rows], dtype=str),
            min_side=np.array([min(m.width or 0, m.height or 0) if m else 0 for m in rows], dtype=np.int64),
        )


def _date(text: str | None, name: str) -> str:
    if text is None:
        return ""
    try:
        return datetime.fromisoformat(text.strip()).replace(tzinfo=None).isoformat()[:19]
    except ValueError:
        message = f"'{name}' must be a date like 2024-05-31 or 2024-05-31T18:00, not {text!r}"
        raise ComposeError(message, field=name) from None
