"""Image handling for the server: decoding uploads under limits, safe gallery paths, and a thumbnail LRU cache."""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from clipmath.serve.errors import RequestError

#: Formats accepted from uploads (Pillow plug-in names); nothing that shells out to a helper (EPS, PDF).
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Decode uploaded bytes to RGB (first frame), refusing empty data, unknown formats and too many pixels."""
    if not data:
        raise RequestError(400, "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise RequestError(
                        413, f"image has too many pixels ({width}x{height} > {max_pixels:,}); send a smaller one"
                    )
                image.seek(0)
                image.load()
                return image.convert("RGB")
    except RequestError:
        raise
    except UnidentifiedImageError:
        raise RequestError(415, f"not an image in a supported format ({', '.join(UPLOAD_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(413, f"image refused as a decompression bomb (limit {max_pixels:,} pixels)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = "truncated image" if "truncated" in str(exc) else (str(exc) or type(exc).__name__)
        raise RequestError(422, f"cannot decode the image: {reason}") from None


def contained_path(root: Path, item_id: str) -> Path:
    """``root / item_id`` resolved (symlinks followed), refused unless it stays inside ``root``."""
    root = root.resolve()
    path = (root / item_id).resolve()
    if not path.is_relative_to(root):
        raise RequestError(403, f"refusing to serve '{item_id}': it resolves outside the store's image folder")
    return path


def make_thumbnail(path: Path, size: int, max_pixels: int) -> bytes:
    """A JPEG whose longer side is at most ``size`` pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise RequestError(422, f"image has too many pixels for a thumbnail ({width}x{height})")
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
                image.seek(0)
                thumb = image.convert("RGB")
        thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()
    except RequestError:
        raise
    except FileNotFoundError:
        raise RequestError(404, "the image file is gone from the store's folder") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise RequestError(422, f"cannot make a thumbnail: {exc or type(exc).__name__}") from None


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
        try:
            stat = os.stat(path)
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
