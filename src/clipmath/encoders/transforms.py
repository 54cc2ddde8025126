"""Image preparation before a backend's own resize/crop: CLIP's plain pipeline or SEARLE/CLIP4Cir ``targetpad``."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

PREPROCESSING_CHOICES = ("clip", "targetpad")


@dataclass(frozen=True)
class ImageTransform:
    """``clip``: the backend's resize + centre crop. ``targetpad``: first pad to a square when the image's aspect
    ratio exceeds ``target_ratio`` (CLIP4Cir/SEARLE use 1.25), so that the crop keeps the whole garment/scene."""

    mode: str = "clip"
    target_ratio: float = 1.25

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESSING_CHOICES:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING_CHOICES}, got {self.mode!r}")

    @property
    def key(self) -> str:
        """A short string that identifies this preprocessing (part of a feature cache's key)."""
        return self.mode if self.mode == "clip" else f"targetpad{self.target_ratio:g}"

    @classmethod
    def from_key(cls, key: str) -> ImageTransform:
        """Inverse of :attr:`key`."""
        if key.startswith("targetpad"):
            return cls("targetpad", float(key[len("targetpad") :] or 1.25))
        return cls(key)


def target_pad(image: Image.Image, target_ratio: float = 1.25) -> Image.Image:
    """Pad the shorter side with black, centred, to a square when ``max/min`` side ratio exceeds ``target_ratio``."""
    width, height = image.size
    if min(width, height) == 0 or max(width, height) / min(width, height) < target_ratio:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def apply_pad(image: Image.Image, transform: ImageTransform) -> Image.Image:
    return target_pad(image, transform.target_ratio) if transform.mode == "targetpad" else image
