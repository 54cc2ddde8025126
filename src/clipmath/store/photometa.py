"""Photo metadata kept with each item: date taken (EXIF, else the file's time), camera, size, GPS, folder.

Read at index time from the file's header only (no pixel decoding) and stored in the item's ``extra`` JSON, in the
same transaction as the item itself. A store written before this existed is migrated by :func:`backfill` (run by
every indexing engine at the end of a run): items without metadata get it in transactions of
:data:`BACKFILL_ROWS`, so an interrupted migration loses nothing and the next run resumes it. Until then a reader
derives what it can (date from the file's time, folder from the id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from clipmath.store.manifest import db_id, manifest_errors, py_id
from clipmath.store.records import ItemRecord

if TYPE_CHECKING:
    from clipmath.store.gallery import Gallery

#: Items migrated per transaction by :func:`backfill`.
BACKFILL_ROWS = 512
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATE_TIME_ORIGINAL, _DATE_TIME, _MAKE, _MODEL = 36867, 306, 271, 272


@dataclass(frozen=True)
class PhotoMeta:
    """What a result shows about an item. ``taken`` is ISO 8601 (EXIF local time has no zone; a file time is UTC);
    ``taken_from`` says which (``exif``, ``file``, or ``video``: a video's creation time). A video frame's row also
    has ``video`` (the video's id) and ``time`` (seconds into it); both are None for a photo."""

    id: str
    folder: str
    taken: str
    taken_from: str
    camera: str | None
    width: int | None
    height: int | None
    gps: tuple[float, float] | None
    size_bytes: int
    video: str | None = None
    time: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def read_exif(path: Path) -> dict:
    """``{"taken", "camera", "gps"}`` from the image header at ``path`` (only the keys found). Never raises: a
    damaged or missing EXIF block gives ``{}``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            found: dict = {}
            stamp = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
            taken = _exif_date(stamp)
            if taken:
                found["taken"] = taken
            camera = " ".join(str(exif.get(tag, "")).strip("\x00 ") for tag in (_MAKE, _MODEL)).strip()
            if camera:
                found["camera"] = camera
            gps = _gps(exif.get_ifd(_GPS_IFD))
            if gps:
                found["gps"] = list(gps)
            return found
    except Exception:  # noqa: BLE001 - a hostile header must never stop indexing; the image itself is checked elsewhere
        return {}


def _exif_date(value: object) -> str | None:
    try:
        return datetime.strptime(str(value).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except (TypeError, ValueError):
        return None


def _gps(ifd: dict) -> tuple[float, float] | None:
    try:
        lat = _degrees(ifd[2]) * (-1 if str(ifd.get(1, "N")).upper().startswith("S") else 1)
        lon = _degrees(ifd[4]) * (-1 if str(ifd.get(3, "E")).upper().startswith("W") else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or lat != lat or lon != lon:
        return None
    return round(lat, 7), round(lon, 7)


def _degrees(parts: object) -> float:
    d, m, s = (float(x) for x in parts)  # type: ignore[union-attr]
    return d + m / 60 + s / 3600


#: The key of ``extra`` that marks an item whose photo metadata was read (``meta`` holds a shard's own metadata).
PHOTO_MARK = "photo_meta"


def with_photo_meta(record: ItemRecord, path: Path) -> ItemRecord:
    """``record`` with its photo metadata (from ``path``'s header) in ``extra``."""
    return ItemRecord(**{**asdict(record), "extra": {**(record.extra or {}), **read_exif(path), PHOTO_MARK: 1}})


def file_time(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc).replace(microsecond=0).isoformat()


def photo_meta(item_id: str, size: int, mtime_ns: int, width: int | None, height: int | None, extra: dict | None):
    extra = extra or {}
    gps = extra.get("gps")
    return PhotoMeta(
        id=item_id,
        folder=str(PurePosixPath(item_id).parent) if "/" in item_id else "",
        taken=extra.get("taken") or file_time(mtime_ns),
        taken_from=extra.get("taken_from") or ("exif" if extra.get("taken") else "file"),
        camera=extra.get("camera"),
        width=width,
        height=height,
        gps=(float(gps[0]), float(gps[1])) if gps else None,
        size_bytes=size,
        video=extra.get("video"),
        time=float(extra["time"]) if extra.get("video") and extra.get("time") is not None else None,
    )


def _rows(gallery: Gallery, where: str = "", params: tuple = ()) -> Iterator[tuple]:
    with manifest_errors(gallery.path):
        yield from gallery._conn.execute(f"SELECT id, size, mtime_ns, width, height, extra FROM items {where}", params)


def _meta_of(row: tuple) -> PhotoMeta:
    extra = json.loads(row[5]) if row[5] else None
    return photo_meta(py_id(row[0]), row[1], row[2], row[3], row[4], extra if isinstance(extra, dict) else None)


def all_photo_meta(gallery: Gallery) -> dict[str, PhotoMeta]:
    """``id -> PhotoMeta`` for every committed item."""
    return {meta.id: meta for meta in map(_meta_of, _rows(gallery))}


def photo_meta_of(gallery: Gallery, ids: Iterable[str]) -> dict[str, PhotoMeta]:
    """``id -> PhotoMeta`` for those of ``ids`` the store holds."""
    found = {}
    for item_id in dict.fromkeys(ids):
        row = next(_rows(gallery, "WHERE id = ?", (db_id(item_id),)), None)
        if row is not None:
            found[item_id] = _meta_of(row)
    return found


def pending(gallery: Gallery) -> list[str]:
    """Ids of items stored before photo metadata existed (no ``photo_meta`` mark in ``extra``)."""
    return [
        py_id(row[0])
        for row in _rows(gallery)
        if not (row[5] and isinstance(parsed := json.loads(row[5]), dict) and parsed.get(PHOTO_MARK))
    ]


def backfill(gallery: Gallery, progress: bool = False) -> int:
    """Read the photo metadata of every item that lacks it (an older store); returns how many were migrated.

    Each block of :data:`BACKFILL_ROWS` items is one transaction that only adds keys to ``extra``: a crash keeps the
    blocks done, and the next call does the rest. A file gone from the folder gets the metadata its row allows."""
    gallery._require_writer()
    todo = pending(gallery)
    conn = gallery._conn
    for start in tqdm(range(0, len(todo), BACKFILL_ROWS), desc="photo metadata", disable=not progress or not todo):
        updates = []
        for item_id in todo[start : start + BACKFILL_ROWS]:
            record = gallery.record(item_id)
            if record is not None:
                updates.append((json.dumps(with_photo_meta(record, gallery.root / item_id).extra), db_id(item_id)))
        with manifest_errors(gallery.path), conn:
            conn.executemany("UPDATE items SET extra = ? WHERE id = ?", updates)
    return len(todo)


def summary(gallery: Gallery) -> dict:
    """What ``info`` shows: how many items have an EXIF date, a camera, GPS; the date range; the cameras."""
    metas = list(all_photo_meta(gallery).values())
    dates = sorted(m.taken for m in metas)
    cameras: dict[str, int] = {}
    for m in metas:
        if m.camera:
            cameras[m.camera] = cameras.get(m.camera, 0) + 1
    return {
        "dated_by_exif": sum(m.taken_from == "exif" for m in metas),
        "videos": len({m.video for m in metas if m.video}),
        "video_frames": sum(m.video is not None for m in metas),
        "with_gps": sum(m.gps is not None for m in metas),
        "first_taken": dates[0] if dates else None,
        "last_taken": dates[-1] if dates else None,
        "cameras": dict(sorted(cameras.items(), key=lambda kv: -kv[1])),
        "folders": len({m.folder for m in metas}),
        "awaiting_metadata": len(pending(gallery)),
    }
