"""Videos in an indexed folder: each kept frame (see :mod:`clipmath.store.videoframes`) is one gallery row.

A frame row's id is ``<video id>#t=<seconds>``; its ``size`` and ``mtime_ns`` are the video file's, its width and
height the frame's, and its ``extra`` holds ``video`` (the video's id), ``time`` (seconds), ``video_sha`` (the video
file's SHA-256), ``video_frames`` (how many frames that version has) and ``taken`` (the container's creation time,
when it records one). The frame rows *are* the record of a video: no other table, so check, repair, merge and export
see ordinary rows.

- An unchanged video (size and mtime) with all its frames is not opened; a touched one whose content is the same only
  gets the new mtime. A video missing some of its frames (``repair`` dropped rows it could not verify) is read again.
- A new or changed video is decoded and encoded in batches while it is read (one decoded frame held at a time), and
  all its frames are committed in one transaction that also drops the rows of its previous version: a run killed in
  the middle of a video leaves the store as it was, and the next run redoes that video.
- A video that cannot be read (not a video, truncated, no video stream, PyAV missing) is skipped with its reason in
  the store's bad files, like an image that cannot be decoded; its earlier frames are dropped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clipmath.imageio import ImageDecodeError
from clipmath.store.files import Candidate, drop_non_finite, hash_file
from clipmath.store.gallery import Gallery
from clipmath.store.manifest import manifest_errors, py_id
from clipmath.store.photometa import PHOTO_MARK
from clipmath.store.records import ItemRecord
from clipmath.store.videoframes import NEEDS_PYAV, SampledFrame, Sampling, VideoReader, frame_id, split_frame_id

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder


@dataclass
class KnownVideo:
    """A video the store holds frames of: the file's size, mtime and SHA-256 when indexed, and its frame ids."""

    size: int
    mtime_ns: int
    sha256: str
    frames: list[str] = field(default_factory=list)
    expected: int | None = None  # frames the indexed version has (None: not recorded)

    @property
    def complete(self) -> bool:
        return self.expected is None or len(self.frames) >= self.expected


@dataclass
class VideoReport:
    """What :func:`index_videos` did: videos indexed, frames added, videos unchanged, ``(id, reason)`` skipped."""

    videos: int = 0
    frames: int = 0
    unchanged: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)


def known_videos(gallery: Gallery) -> dict[str, KnownVideo]:
    """``video id -> KnownVideo`` from the committed frame rows."""
    with manifest_errors(gallery.path):
        return read_videos(gallery.manifest)


def read_videos(conn: sqlite3.Connection) -> dict[str, KnownVideo]:
    """:func:`known_videos` from a manifest connection (``check`` reads one without opening the gallery)."""
    found: dict[str, KnownVideo] = {}
    rows = conn.execute("SELECT id, size, mtime_ns, extra FROM items WHERE extra LIKE '%\"video\"%'")
    for raw_id, size, mtime_ns, extra in rows:
        item_id, parsed = py_id(raw_id), json.loads(extra)
        split = split_frame_id(item_id)
        if split is None or not isinstance(parsed, dict) or parsed.get("video") != split[0]:
            continue
        expected = parsed.get("video_frames")
        video = found.setdefault(
            split[0],
            KnownVideo(
                size,
                mtime_ns,
                str(parsed.get("video_sha", "")),
                expected=expected if isinstance(expected, int) else None,
            ),
        )
        video.frames.append(item_id)
    return found


def index_videos(
    gallery: Gallery,
    encoder: Encoder,
    candidates: Sequence[Candidate],
    sampling: Sampling,
    batch_size: int,
    advance: Callable[[int], object] = lambda n: None,
) -> VideoReport:
    """Index the new or changed videos ``candidates`` into ``gallery``, one transaction per video; ``advance``
    is called with 1 after each video (a progress bar)."""
    report = VideoReport()
    known = known_videos(gallery) if candidates else {}
    for candidate in candidates:
        old = known.get(candidate.id)
        stale = old.frames if old else []
        digest = hash_file(candidate)
        if isinstance(digest, ImageDecodeError):
            _skip(gallery, candidate, str(digest), stale, report)
        elif old is not None and old.sha256 == digest and old.complete:
            gallery.touch([(frame, candidate.mtime_ns) for frame in old.frames])
            report.unchanged += 1
        else:
            try:
                records, vectors = _encode_video(candidate, digest, encoder, sampling, batch_size, gallery.dtype)
            except ImportError:
                _skip(gallery, candidate, NEEDS_PYAV, stale, report)
            except ImageDecodeError as exc:
                _skip(gallery, candidate, str(exc), stale, report)
            else:
                new = {r.id for r in records}
                gallery.commit(records, vectors, drop=[f for f in stale if f not in new])
                report.videos += 1
                report.frames += len(records)
        advance(1)
    return report


def _skip(gallery: Gallery, candidate: Candidate, reason: str, stale: list[str], report: VideoReport) -> None:
    gallery.commit(bad=[(candidate.id, reason, candidate.size, candidate.mtime_ns)], drop=stale)
    report.bad.append((candidate.id, reason))


def _encode_video(
    candidate: Candidate, digest: str, encoder: Encoder, sampling: Sampling, batch_size: int, dtype: np.dtype
) -> tuple[list[ItemRecord], np.ndarray]:
    """The frame rows of one video and their vectors (encoded a batch at a time while the video is decoded)."""
    records: list[ItemRecord] = []
    parts: list[np.ndarray] = []
    with VideoReader(candidate.path) as reader:
        created = reader.created
        batch: list[SampledFrame] = []
        for frame in reader.sample(sampling):
            batch.append(frame)
            if len(batch) >= batch_size:
                parts.append(_encode(encoder, batch, batch_size))
                records += [_record(candidate, digest, f, created) for f in batch]
                batch = []
        if batch:
            parts.append(_encode(encoder, batch, batch_size))
            records += [_record(candidate, digest, f, created) for f in batch]
    if not records:
        raise ImageDecodeError("no frame could be decoded", "corrupt")
    bad: list = []
    kept, vectors = drop_non_finite(records, np.concatenate(parts), dtype, bad)
    if not kept:
        raise ImageDecodeError(bad[0][1], "corrupt")
    for record in kept:
        record.extra["video_frames"] = len(kept)  # what a complete set of this version's rows counts
    return kept, np.asarray(vectors)


def _encode(encoder: Encoder, batch: list[SampledFrame], batch_size: int) -> np.ndarray:
    return np.asarray(encoder.encode_images([f.image for f in batch], batch_size=batch_size), dtype=np.float32)


def _record(candidate: Candidate, digest: str, frame: SampledFrame, created: str | None) -> ItemRecord:
    item_id = frame_id(candidate.id, frame.time)
    extra: dict = {"video": candidate.id, "time": frame.time, "video_sha": digest, PHOTO_MARK: 1}
    if created:
        extra |= {"taken": created, "taken_from": "video"}
    frame_sha = hashlib.sha256(f"{digest}#t={frame.time:.3f}".encode()).hexdigest()  # one hash per row
    return ItemRecord(item_id, frame_sha, candidate.size, candidate.mtime_ns, frame.width, frame.height, extra)
