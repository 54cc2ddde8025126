"""The one image decoder: a path or bytes in, an RGB image out, or an :class:`ImageDecodeError` saying why not.

Every layer that reads pixels (the folder indexer, benchmark galleries, query images, server uploads and thumbnails)
calls :func:`decode_image` / :func:`decode`, so the same file is accepted or refused the same way everywhere:

- one pixel limit, :data:`MAX_PIXELS` (width × height of the stored image), checked before any pixel is decoded;
- only the formats in :data:`IMAGE_FORMATS` (nothing that shells out to a helper, such as EPS or PDF);
- the EXIF orientation applied (phone photos come out upright);
- only regular files are opened, without blocking (a named pipe, device or socket named ``x.jpg`` is refused);
- optional JPEG draft mode (``draft=(w, h)``): decode at a reduced scale that still covers ``w × h`` — fast for
  large photos that will be resized anyway (thumbnails, model input).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error  # Pillow plug-ins raise it on short headers
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from clipmath.errors import ClipmathError

#: File endings picked up when indexing a folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
#: Pillow formats accepted anywhere (indexing, queries, uploads, thumbnails).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: The one pixel limit (width × height) for indexing, uploads and thumbnails: above it an image is refused as a
#: possible decompression bomb. Pillow's own default, so an image Pillow opens without a warning is accepted.
MAX_PIXELS = 89_478_485


class ImageDecodeError(ClipmathError):
    """A file or upload that is not a usable image; ``str(exc)`` is the reason, ``kind`` its class.

    Kinds: ``empty``, ``special`` (not a regular file), ``unreadable`` (permission, I/O), ``format`` (not an image
    or a format not in :data:`IMAGE_FORMATS`), ``too_large`` (over the pixel limit), ``corrupt`` (truncated, bad data).
    """

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image (first frame, orientation applied) and the full oriented size it was decoded from."""

    image: Image.Image
    width: int  # before any draft reduction
    height: int
    format: str


def decode_image(
    source: str | Path | bytes,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] = IMAGE_FORMATS,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``source`` (a path or the bytes of a file) to RGB. See :func:`decode`."""
    return decode(source, max_pixels=max_pixels, formats=formats, draft=draft).image


def decode(
    source: str | Path | bytes,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] = IMAGE_FORMATS,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    """Open, check, fully decode and convert to RGB. Raises FileNotFoundError (a path that does not exist) or
    :class:`ImageDecodeError` (empty, special file, unreadable, unknown format, too many pixels, corrupt)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageDecodeError("empty file (0 bytes)", "empty")
        return _decode_stream(io.BytesIO(source), max_pixels, formats, draft)
    try:
        with open_regular_file(Path(source)) as stream:
            return _decode_stream(stream, max_pixels, formats, draft)
    except (FileNotFoundError, ImageDecodeError):
        raise
    except PermissionError:
        raise ImageDecodeError("permission denied", "unreadable") from None
    except OSError as exc:
        raise ImageDecodeError(f"unreadable: {exc.strerror or exc}", "unreadable") from None


def open_regular_file(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a non-empty regular file (symlinks followed), without ever blocking:
    a named pipe, device or socket is refused before and after opening (``O_NONBLOCK``, then ``fstat``)."""
    _require_regular(os.stat(path), path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        _require_regular(info, path)  # replaced between stat and open
        if info.st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)", "empty")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def special_file_kind(mode: int) -> str | None:
    """'named pipe', 'device', 'socket', 'directory', … for a stat mode that is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def _require_regular(info: os.stat_result, path: Path) -> None:
    kind = special_file_kind(info.st_mode)
    if kind is not None:
        raise ImageDecodeError(f"not a regular file ({kind})", "special")


def _decode_stream(
    stream: BinaryIO, max_pixels: int, formats: tuple[str, ...], draft: tuple[int, int] | None
) -> DecodedImage:
    image = None
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is replaced by the explicit limit below (its hard error still applies).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=formats)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"too many pixels ({width}x{height} > {max_pixels:,}): decompression bomb?", "too_large"
            )
        image_format = image.format or ""
        image.seek(0)
        if draft is not None and image_format == "JPEG":
            image.draft("RGB", draft)
        image.load()
        if _orient_in_place(image):
            width, height = height, width
        # no copy when the decoded pixels are already RGB (a large upload is held once, not twice)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return DecodedImage(rgb, width, height, image_format)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image in a supported format ({', '.join(formats)})", "format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}", "too_large") from None
    except MemoryError:
        raise ImageDecodeError("not enough memory to decode this image", "too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct_error) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason or isinstance(exc, EOFError):
            reason = "truncated image"
        raise ImageDecodeError(f"cannot decode: {reason}", "corrupt") from None
    finally:
        if image is not None and image.mode != "RGB":
            image.close()  # its RGB copy is what the caller gets


def image_size(data: bytes, formats: tuple[str, ...] = IMAGE_FORMATS) -> tuple[int, int]:
    """Width and height from the header of an image's bytes, decoding no pixels (e.g. to budget memory first)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                return image.size
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image in a supported format ({', '.join(formats)})", "format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}", "too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct_error) as exc:
        raise ImageDecodeError(f"cannot decode: {exc or type(exc).__name__}", "corrupt") from None


def _orient_in_place(image: Image.Image) -> bool:
    """Turn ``image`` upright by its EXIF orientation; True if width and height swapped. A damaged EXIF block
    leaves the image as it is (it must not make a good image unusable)."""
    before = image.size
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001
        return False
    return image.size != before
