"""Safe image decoding: every way a file can fail becomes an :class:`ImageDecodeError` with a short reason."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

#: File endings picked up when indexing a folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

#: Default pixel limit (width × height) above which an image is refused as a decompression bomb.
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default


class ImageDecodeError(Exception):
    """A file that is not a usable image; ``str(exc)`` is the reason shown to the user."""


def decode_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert to RGB; first frame of animations. Raises FileNotFoundError or
    :class:`ImageDecodeError` (empty, truncated, not an image, too many pixels, unreadable)."""
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(f"too many pixels ({width}x{height} > {max_pixels}): decompression bomb?")
                image.seek(0)
                image.load()
                return image.convert("RGB")
    except FileNotFoundError:
        raise
    except ImageDecodeError:
        raise
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from None
    except OSError as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = "truncated image"
        raise ImageDecodeError(f"cannot decode: {reason}") from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt image: {exc}") from None
