"""Image decoding for the store: the one decoder lives in :mod:`clipmath.imageio` (re-exported here)."""

from clipmath.imageio import (
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    decode,
    decode_image,
)

#: Former name of :data:`clipmath.imageio.MAX_PIXELS`.
DEFAULT_MAX_PIXELS = MAX_PIXELS

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "DecodedImage",
    "ImageDecodeError",
    "decode",
    "decode_image",
]
