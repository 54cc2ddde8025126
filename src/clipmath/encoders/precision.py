"""Numeric precision: one ``dtype`` setting (``auto|float32|float16|bfloat16``) for inference and training.

* Inference (:func:`inference_dtype`): the dtype an encoder's weights and pixels are held in. ``auto`` is float16
  on CUDA and float32 elsewhere. float16 on the CPU is refused: PyTorch's CPU kernels for it are slow and some are
  missing; bfloat16 is the CPU's half type.
* Training (:func:`autocast_dtype`): weights stay float32 and the setting picks the autocast (mixed-precision)
  dtype, or ``None`` for plain float32. ``auto`` is bfloat16 on a CUDA GPU that supports it, else float16, and no
  autocast on the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipmath.errors import ModelLoadError

if TYPE_CHECKING:  # torch is imported when a dtype is resolved, not with the choices (option checks stay light)
    import torch

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}


def dtype_name(dtype: str | torch.dtype | None) -> str:
    """The canonical name of a dtype setting (``None`` → ``auto``); unknown names raise :class:`ModelLoadError`."""
    if dtype is None:
        return "auto"
    if not isinstance(dtype, str):
        for name, value in _dtypes().items():
            if value == dtype:
                return name
        raise ModelLoadError(f"dtype {dtype} is not supported: use one of {', '.join(DTYPE_CHOICES)}")
    name = _ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in DTYPE_CHOICES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPE_CHOICES)}")
    return name


def _dtypes() -> dict[str, torch.dtype]:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def inference_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The dtype an encoder runs in on ``device``."""
    import torch

    device = torch.device(device)
    name = dtype_name(dtype)
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name == "float16" and device.type == "cpu":
        raise ModelLoadError("float16 is not supported on the CPU: use bfloat16 (or float32) there")
    return _dtypes()[name]


def autocast_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for training on ``device``, or ``None`` for plain float32."""
    import torch

    device = torch.device(device)
    name = dtype_name(dtype)
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "float32":
        return None
    if name == "float16" and device.type == "cpu":
        raise ModelLoadError("float16 mixed precision is not supported on the CPU: use bfloat16 (or float32)")
    return _dtypes()[name]
