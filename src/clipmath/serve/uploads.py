"""Uploads under a memory bound: a budget of decoded pixels in flight across all requests.

An upload's pixel count is read from its header (no pixels decoded) and reserved in the :class:`PixelBudget`
before it is decoded; it is given back once the image is embedded. An upload that does not fit waits (without
holding a worker thread) and is answered 503 after ``wait_seconds``. When the budget empties, the process returns
freed heap memory to the system (``malloc_trim``), so a burst of large uploads does not leave the server large.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clipmath.imageio import ImageDecodeError, image_size
from clipmath.serve.errors import RequestError
from clipmath.serve.images import image_request_error

#: How often a waiting upload looks for room in the budget.
_POLL_SECONDS = 0.02


class PixelBudget:
    """Thread-safe count of pixels reserved by uploads being decoded or embedded, bounded by ``limit``."""

    def __init__(self, limit: int, wait_seconds: float = 60.0) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.in_flight = 0
        self.peak = 0
        self.refused = 0
        self._lock = threading.Lock()

    def try_take(self, pixels: int) -> bool:
        with self._lock:
            if self.in_flight and self.in_flight + pixels > self.limit:
                return False  # an upload alone may use the whole budget (its own limit is checked elsewhere)
            self.in_flight += pixels
            self.peak = max(self.peak, self.in_flight)
            return True

    def give_back(self, pixels: int) -> bool:
        """Return ``pixels``; True when nothing is in flight any more."""
        with self._lock:
            self.in_flight -= pixels
            return self.in_flight == 0

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Reserve ``pixels`` for the block (waiting for room, then 503); memory is returned when all are done."""
        deadline = time.monotonic() + self.wait_seconds
        while not self.try_take(pixels):
            if time.monotonic() >= deadline:
                with self._lock:
                    self.refused += 1
                raise RequestError(503, "the server is busy decoding other uploads: try again in a moment")
            await asyncio.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            if self.give_back(pixels):
                release_free_memory()


def upload_pixels(data: bytes, max_pixels: int) -> int:
    """The pixel count an upload will decode to, from its header; refuses it (4xx) before any decoding."""
    try:
        width, height = image_size(data)
    except ImageDecodeError as exc:
        raise image_request_error(exc, "the uploaded image") from None
    if width * height > max_pixels:
        raise RequestError(413, f"image has too many pixels ({width}x{height} > {max_pixels:,}); send a smaller one")
    return width * height


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps large freed blocks otherwise); no-op elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_TRIM: list = []


def _malloc_trim():  # noqa: ANN202 - a ctypes function or None
    if not _TRIM:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _TRIM.append(getattr(libc, "malloc_trim", None))
        except OSError:
            _TRIM.append(None)
    return _TRIM[0]
