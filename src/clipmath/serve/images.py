"""Image handling for the server: decoding uploads under limits, safe gallery paths, and a thumbnail LRU cache."""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipmath.imageio import IMAGE_FORMATS, ImageDecodeError, decode, decode_image
from clipmath.serve.errors import RequestError
from clipmath.store.videoframes import VideoReader, frame_jpeg, split_frame_id

#: HTTP status of each :class:`ImageDecodeError` kind.
_STATUS_OF_KIND = {"empty": 400, "format": 415, "too_large": 413}


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Decode uploaded bytes to RGB (first frame, EXIF orientation applied) with the one image decoder."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise image_request_error(exc, "the uploaded image") from None


def image_request_error(exc: ImageDecodeError, what: str) -> RequestError:
    if exc.kind == "format":
        return RequestError(415, f"{what} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})")
    if exc.kind == "empty":
        return RequestError(400, f"{what} is empty")
    return RequestError(_STATUS_OF_KIND.get(exc.kind, 422), f"cannot decode {what}: {exc}")


def contained_path(root: Path, item_id: str) -> Path:
    """``root / item_id`` resolved (symlinks followed), refused unless it stays inside ``root``."""
    root = root.resolve()
    path = (root / item_id).resolve()
    if not path.is_relative_to(root):
        raise RequestError(403, f"refusing to serve '{item_id}': it resolves outside the store's image folder")
    return path


def make_thumbnail(path: Path, size: int, max_pixels: int) -> bytes:
    """A JPEG whose longer side is at most ``size`` pixels (large JPEGs are decoded at a reduced scale). A video
    frame's path (see :meth:`QueryEngine.gallery_file`) gives that frame, decoded at its time."""
    frame = split_frame_id(path.name)
    if frame is not None:
        return _frame_thumbnail(path.with_name(frame[0]), frame[1], size)
    try:
        thumb = decode(path, max_pixels=max_pixels, draft=(size, size)).image
    except FileNotFoundError:
        raise RequestError(404, "the image file is gone from the store's folder") from None
    except ImageDecodeError as exc:
        raise RequestError(422, f"cannot make a thumbnail: {exc}") from None
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def gallery_image(path: Path) -> Image.Image:
    """The pixels of a gallery item's file (:meth:`QueryEngine.gallery_file`): an image, or a video's frame."""
    frame = split_frame_id(path.name)
    if frame is None:
        return decode_image(path)  # the index's pixel limit
    try:
        with VideoReader(path.with_name(frame[0])) as reader:
            return reader.frame_at(frame[1])
    except ImportError as exc:
        raise RequestError(501, f"cannot read a video frame: {exc}") from None


def frame_image(path: Path) -> bytes | None:
    """The JPEG of a video frame at full size for a frame's :meth:`QueryEngine.gallery_file` path; None for any
    other path."""
    frame = split_frame_id(path.name)
    return None if frame is None else _frame_thumbnail(path.with_name(frame[0]), frame[1], 1 << 16)


def _frame_thumbnail(video: Path, seconds: float, size: int) -> bytes:
    try:
        return frame_jpeg(video, seconds, size)
    except FileNotFoundError:
        raise RequestError(404, "the video file is gone from the store's folder") from None
    except ImportError as exc:
        raise RequestError(501, f"cannot show a video frame: {exc}") from None
    except ImageDecodeError as exc:
        raise RequestError(422, f"cannot make a thumbnail: {exc}") from None


@dataclass(frozen=True)
class _ThumbKey:
    path: str
    size: int
    file_size: int
    mtime_ns: int


class ThumbnailCache:
    """Thread-safe LRU of JPEG thumbnails bounded in bytes; a changed file (size or mtime) gets a new entry."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._entries: OrderedDict[_ThumbKey, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path, size: int) -> bytes:
        frame = split_frame_id(path.name)
        try:
            stat = os.stat(path if frame is None else path.with_name(frame[0]))
        except FileNotFoundError:
            raise RequestError(404, "the image file is gone from the store's folder") from None
        key = _ThumbKey(str(path), size, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = make_thumbnail(path, size, self.max_pixels)
        with self._lock:
            if key not in self._entries and len(data) <= self.max_bytes:
                self._entries[key] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= len(dropped)
        return data

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes
