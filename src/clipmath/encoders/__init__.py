"""Encoder factory: one call turns a model name into an :class:`Encoder`.

Names understood by :func:`load_encoder`:

* ``auto`` (default): ``openai/clip-vit-base-patch32`` if it is in the local Hugging Face cache, otherwise the
  offline pretrained model below. Nothing is downloaded implicitly; name a hub model to download it.
* a Hugging Face hub name of a CLIP model (``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``…)
* a local folder holding a saved ``CLIPModel`` (``save_pretrained`` output)
* ``offline-imagenet-minilm``: a real image-text space built from two pretrained models that install from the
  package registry (EfficientNet-Lite0 ImageNet classifier + all-MiniLM-L6-v2); see ``docs/offline-models.md``
* ``tiny-random-clip``: a tiny random CLIP for plumbing tests (its results mean nothing)
"""

from __future__ import annotations

import logging
import os

from clipmath.encoders.base import PLACEHOLDER, Encoder, EncoderInfo, TokenOverrides
from clipmath.encoders.hf_clip import DEFAULT_CLIP, HFClipEncoder
from clipmath.encoders.transforms import PREPROCESSING_CHOICES, ImageTransform, target_pad
from clipmath.errors import ModelLoadError

OFFLINE_NAME = "offline-imagenet-minilm"
TINY_NAME = "tiny-random-clip"
AUTO = "auto"

log = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "DEFAULT_CLIP",
    "OFFLINE_NAME",
    "PLACEHOLDER",
    "PREPROCESSING_CHOICES",
    "TINY_NAME",
    "Encoder",
    "EncoderInfo",
    "HFClipEncoder",
    "ImageTransform",
    "TokenOverrides",
    "load_encoder",
    "resolve_model_name",
    "target_pad",
]


def resolve_model_name(name: str | None = None) -> str:
    """Turn ``None``/``auto`` into a concrete name: ``$CLIPMATH_MODEL``, a cached CLIP, or the offline model."""
    name = name or os.environ.get("CLIPMATH_MODEL") or AUTO
    if name != AUTO:
        return name
    if _clip_in_local_cache(DEFAULT_CLIP):
        return DEFAULT_CLIP
    log.info("no CLIP checkpoint in the local Hugging Face cache; using %s", OFFLINE_NAME)
    return OFFLINE_NAME


def load_encoder(
    name: str | None = AUTO,
    device: str = "cpu",
    fp16: bool = False,
    preprocessing: str = "clip",
    target_ratio: float = 1.25,
) -> Encoder:
    """Load an encoder by name (see module docstring). ``preprocessing`` is ``clip`` or ``targetpad``."""
    _quiet_transformers()
    transform = ImageTransform(preprocessing, target_ratio)
    device = _check_device(device)
    resolved = resolve_model_name(name)
    if resolved == OFFLINE_NAME:
        from clipmath.encoders.offline import OfflineImageNetMiniLM

        return OfflineImageNetMiniLM.load(device=device, transform=transform)
    if resolved == TINY_NAME or resolved.startswith(TINY_NAME + ":"):
        from clipmath.encoders.tiny import tiny_clip_folder

        seed = int(resolved.split(":", 1)[1]) if ":" in resolved else 0
        return HFClipEncoder.load(str(tiny_clip_folder(seed)), device=device, transform=transform, model_id=resolved)
    return HFClipEncoder.load(resolved, device=device, fp16=fp16, transform=transform)


def _check_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    return device


def _clip_in_local_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        return isinstance(found, str)
    except Exception:  # noqa: BLE001 - any failure just means "not cached"
        return False


def _quiet_transformers() -> None:
    """Silence transformers' progress bars and the torchvision-fallback notice; clipmath prints its own."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
