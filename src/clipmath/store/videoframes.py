"""Frames of a video file, read with PyAV (the optional ``video`` extra): sampling for the index, one frame for a
thumbnail, and the ids of frame rows.

Sampling (:meth:`VideoReader.sample`) decodes the video once, front to back, holding one decoded frame at a time:

- a frame every ``every`` seconds (widened to ``duration / max_frames`` for a long video, so the cap spreads the
  frames over the whole video instead of cutting it short);
- plus a frame at every scene change: each decoded frame is reduced to a 32×32 grayscale thumbnail, and a frame
  whose thumbnail differs from the previous one by a mean absolute difference above ``scene_threshold`` (on a 0–1
  scale) starts a new scene; the periodic clock restarts there;
- at most ``max_frames`` frames per video.

Decoding is kept cheap: the codec decodes on several threads (``thread_type="AUTO"``) and skips frames no other frame
refers to (``skip_frame="NONREF"``, typically B-frames): the scene detector then compares reference frames, which
lie at most a fraction of a second apart. A kept frame is scaled so its shorter side is at most :data:`FRAME_SIDE`
pixels (the model's input is smaller still) before it is handed on.

A frame row's id is ``<video id>#t=<seconds with 3 decimals>`` (:func:`frame_id`), e.g. ``trips/beach.mp4#t=12.500``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from clipmath.imageio import ImageDecodeError, open_regular_file

#: File endings indexed as videos.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi"})
#: The reason a video is skipped when PyAV is not installed.
NEEDS_PYAV = "needs PyAV (pip install 'clipmath[video]')"
#: The shorter side of a kept frame at most (pixels) before it goes to the encoder.
FRAME_SIDE = 384
_SCENE_THUMB = 32
_FRAME_ID = re.compile(r"(.+)#t=(\d+\.\d{3})", re.DOTALL)


def is_video(item_id: str) -> bool:
    return PurePosixPath(item_id).suffix.lower() in VIDEO_SUFFIXES


def frame_id(video: str, seconds: float) -> str:
    """The id of the frame of ``video`` at ``seconds``."""
    return f"{video}#t={seconds:.3f}"


def split_frame_id(item_id: str) -> tuple[str, float] | None:
    """``(video id, seconds)`` of a frame id; None for any other id (a photo's)."""
    match = _FRAME_ID.fullmatch(item_id)
    if match is None or not is_video(match.group(1)):
        return None
    return match.group(1), float(match.group(2))


def pyav() -> Any | None:
    """The ``av`` module, or None when PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    return av


@dataclass(frozen=True)
class Sampling:
    """Which frames :meth:`VideoReader.sample` keeps (see the module's docstring; the settings and their defaults
    are :class:`~clipmath.store.indexer.IndexConfig`'s ``video_every``, ``scene_threshold``, ``max_frames``)."""

    every: float
    scene_threshold: float
    max_frames: int


@dataclass(frozen=True)
class SampledFrame:
    """A kept frame: its time (seconds from the start), the image to encode, and the video's frame size."""

    time: float
    image: Image.Image
    width: int
    height: int


class VideoReader:
    """An open video file (its first video stream). Raises :class:`ImageDecodeError` for a file that is not a
    readable video (not a video, truncated, no video stream) and ``ImportError`` without PyAV."""

    def __init__(self, path: Path) -> None:
        av = pyav()
        if av is None:
            raise ImportError(NEEDS_PYAV)
        self._errors = (av.error.FFmpegError, OSError, ValueError, EOFError, MemoryError)
        open_regular_file(path).close()  # a special file is refused without blocking; an empty one as empty
        try:
            self._container = av.open(str(path), mode="r")
        except self._errors as exc:
            raise ImageDecodeError(f"cannot read the video: {_reason(exc)}", "format") from None
        if not self._container.streams.video:
            self._container.close()
            raise ImageDecodeError("no video stream in the file", "format")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"

    @property
    def created(self) -> str | None:
        """The container's creation time (ISO 8601, UTC), if it records one."""
        text = self._container.metadata.get("creation_time") or self._stream.metadata.get("creation_time")
        try:
            stamp = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
        if stamp.year < 1971:  # a zeroed field (1904 or 1970), not a date
            return None
        return stamp.astimezone(timezone.utc).replace(microsecond=0).isoformat()

    @property
    def duration(self) -> float | None:
        """Seconds, from the stream or the container header (None if neither says)."""
        if self._stream.duration and self._stream.time_base:
            return float(self._stream.duration * self._stream.time_base)
        if self._container.duration:
            return self._container.duration / 1_000_000
        return None

    def sample(self, sampling: Sampling) -> Iterator[SampledFrame]:
        """The kept frames in time order (a generator: one decoded frame held at a time)."""
        every = max(sampling.every, (self.duration or 0.0) / max(1, sampling.max_frames))
        self._stream.codec_context.skip_frame = "NONREF"
        previous, last_kept, kept = None, None, 0
        for seconds, frame in self._frames():
            seconds = round(seconds, 3)
            thumb = frame.reformat(width=_SCENE_THUMB, height=_SCENE_THUMB, format="gray").to_ndarray()
            thumb = thumb.astype(np.float32) / 255.0
            scene = previous is None or float(np.abs(thumb - previous).mean()) > sampling.scene_threshold
            previous = thumb
            if scene or last_kept is None or seconds - last_kept >= every - 1e-6:
                yield SampledFrame(seconds, _image(frame), frame.width, frame.height)
                last_kept, kept = seconds, kept + 1
                if kept >= sampling.max_frames:
                    return

    def frame_at(self, seconds: float) -> Image.Image:
        """The frame shown at ``seconds`` (the first frame at or after it, else the last one)."""
        time_base = self._stream.time_base
        if time_base:
            try:
                self._container.seek(int(seconds / time_base), stream=self._stream, backward=True)
            except self._errors:
                pass  # a file that cannot seek is decoded from the start
        last = None
        for shown, frame in self._frames():
            last = frame
            if shown >= seconds - 0.0005:
                break
        if last is None:
            raise ImageDecodeError(f"no frame at {seconds:.3f} s", "corrupt")
        return last.to_image()

    def _frames(self) -> Iterator[tuple[float, Any]]:
        """``(seconds, frame)`` of each decoded frame (a frame without a timestamp: counted at the average rate)."""
        rate = float(self._stream.average_rate or 25)
        try:
            for index, frame in enumerate(self._container.decode(self._stream)):
                yield (float(frame.time) if frame.time is not None else index / rate), frame
        except self._errors as exc:
            raise ImageDecodeError(f"cannot decode the video: {_reason(exc)}", "corrupt") from None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _image(frame: Any) -> Image.Image:
    width, height = frame.width, frame.height
    scale = min(1.0, FRAME_SIDE / max(1, min(width, height)))
    if scale < 1.0:
        return frame.to_image(width=max(1, round(width * scale)), height=max(1, round(height * scale)))
    return frame.to_image()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.split(": '")[0]  # PyAV appends the file name; the report names the file already


def frame_jpeg(path: Path, seconds: float, size: int) -> bytes:
    """A JPEG of the frame of the video at ``path`` shown at ``seconds``, its longer side at most ``size``."""
    import io

    with VideoReader(path) as reader:
        image = reader.frame_at(seconds)
    image.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
