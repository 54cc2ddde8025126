"""Encoder factory: one call turns a model name into an :class:`Encoder`.

Names understood by :func:`load_encoder`:

* ``auto`` (default): ``openai/clip-vit-base-patch32`` if it is in the local Hugging Face cache, otherwise the
  offline pretrained model below. Nothing is downloaded implicitly; name a hub model to download it.
* a name registered in :data:`ENCODERS` (``clipmath models`` lists them), optionally ``name:ARG``:

  - ``offline-imagenet-minilm``: a real image-text space built from two pretrained models that install from the
    package registry (EfficientNet-Lite0 ImageNet classifier + all-MiniLM-L6-v2); see ``docs/offline-models.md``
  - ``tiny-random-clip[:SEED]``: a tiny random CLIP for plumbing tests (its results mean nothing)
* a Hugging Face hub name of a CLIP model (``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``…)
* a local folder holding a saved ``CLIPModel`` (``save_pretrained`` output, or ``clipmath train finetune`` output,
  whose ``clipmath.json`` is honoured)
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

from clipmath.encoders.compat import EmbeddingSpace, check_same_space
from clipmath.encoders.identity import OFFLINE_NAME, TINY_NAME, EncoderInfo
from clipmath.encoders.specs import ENCODERS, EncoderSpec, LoadOptions, register_encoder
from clipmath.encoders.transforms import PREPROCESSING_CHOICES, ImageTransform, target_pad
from clipmath.errors import ModelLoadError
from clipmath.vectors import l2_normalise

if TYPE_CHECKING:
    from clipmath.encoders.base import PLACEHOLDER, Encoder, TokenOverrides
    from clipmath.encoders.hf_clip import DEFAULT_CLIP, HFClipEncoder
    from clipmath.encoders.precision import DTYPE_CHOICES

AUTO = "auto"
#: Names exported lazily, so that importing this package (or its torch-free modules such as ``identity``) does
#: not import torch; the model backends load on first use.
_LAZY = {
    "PLACEHOLDER": "clipmath.encoders.base",
    "Encoder": "clipmath.encoders.base",
    "TokenOverrides": "clipmath.encoders.base",
    "DEFAULT_CLIP": "clipmath.encoders.hf_clip",
    "HFClipEncoder": "clipmath.encoders.hf_clip",
    "DTYPE_CHOICES": "clipmath.encoders.precision",
}

log = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "DEFAULT_CLIP",
    "DTYPE_CHOICES",
    "ENCODERS",
    "OFFLINE_NAME",
    "PLACEHOLDER",
    "PREPROCESSING_CHOICES",
    "TINY_NAME",
    "EmbeddingSpace",
    "Encoder",
    "EncoderInfo",
    "EncoderSpec",
    "HFClipEncoder",
    "ImageTransform",
    "LoadOptions",
    "TokenOverrides",
    "check_same_space",
    "l2_normalise",
    "load_encoder",
    "register_encoder",
    "resolve_model_name",
    "target_pad",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipmath.encoders' has no attribute {name!r}")


def resolve_model_name(name: str | None = None) -> str:
    """Turn ``None``/``auto`` into a concrete name: ``$CLIPMATH_MODEL``, a cached CLIP, or the offline model."""
    name = name or os.environ.get("CLIPMATH_MODEL") or AUTO
    if name != AUTO:
        return name
    from clipmath.encoders.hf_clip import DEFAULT_CLIP

    if _clip_in_local_cache(DEFAULT_CLIP):
        return DEFAULT_CLIP
    log.info("no CLIP checkpoint in the local Hugging Face cache; using %s", OFFLINE_NAME)
    return OFFLINE_NAME


def load_encoder(
    name: str | None = AUTO,
    device: str = "cpu",
    fp16: bool = False,
    preprocessing: str | None = None,
    target_ratio: float = 1.25,
    dtype: str = "auto",
) -> Encoder:
    """Load an encoder by name (see module docstring).

    ``preprocessing`` is ``clip`` or ``targetpad`` (``None``: the model's own, else ``clip``); ``dtype`` is one of
    :data:`DTYPE_CHOICES` (``auto``: float16 on CUDA, float32 elsewhere; ``fp16=True`` is the older spelling of
    ``auto``, see :mod:`clipmath.encoders.precision`).
    """
    _quiet_transformers()
    transform = ImageTransform(preprocessing or "clip", target_ratio)
    options = LoadOptions(_check_device(device), transform, dtype)
    spec, arg = ENCODERS.resolve_or(
        resolve_model_name(name),
        lambda hub_or_folder: _hub_or_folder_spec(hub_or_folder, preprocessing is not None),
        hint="other models are a Hugging Face hub name (org/name) or a model folder",
    )
    return spec.load(arg, options)


def _hub_or_folder_spec(name: str, preprocessing_given: bool) -> EncoderSpec:
    def build(arg: str | None, options: LoadOptions) -> Encoder:
        from clipmath.encoders.folder import load_hub_or_folder

        return load_hub_or_folder(name, options, preprocessing_given=preprocessing_given)

    return EncoderSpec(name, "a Hugging Face hub model or a local model folder", True, build=build)


def _check_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but no CUDA GPU is available: use the cpu device")
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
