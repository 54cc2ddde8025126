"""Where and how a model runs: CPU threads per calling thread, moves to the device, one-line CUDA errors.

* :class:`ThreadBudget`: torch's intra-op thread count is a per-thread setting (OpenMP), so a server's worker
  thread can run with a different count than the main thread. An encoder holds one budget and applies it in
  every thread that calls it (:meth:`ThreadBudget.apply`), once per thread.
* :func:`cuda_errors`: turns CUDA out-of-memory, missing-GPU and wrong-device failures into a one-line
  :class:`~clipmath.errors.ModelLoadError` that says what to change.
* :func:`to_device`: pinned memory and a non-blocking copy for CPU → CUDA transfers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from clipmath.errors import ModelLoadError


class ThreadBudget:
    """A torch intra-op thread count applied in each thread that runs the model (``None``: torch's count as
    it was when the budget was made, in the thread that made it)."""

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ModelLoadError(f"threads must be at least 1, got {threads}")
        self.threads = int(threads) if threads else torch.get_num_threads()
        self._local = threading.local()
        if threads:
            torch.set_num_threads(self.threads)
        self._local.applied = True

    def apply(self) -> None:
        """Set torch's thread count in the calling thread (cheap after the first call in a thread)."""
        if getattr(self._local, "applied", False):
            return
        torch.set_num_threads(self.threads)
        self._local.applied = True

    def set(self, threads: int) -> None:
        """Change the budget: every thread applies the new count on its next call."""
        if threads < 1:
            raise ModelLoadError(f"threads must be at least 1, got {threads}")
        self.threads = int(threads)
        self._local = threading.local()
        self.apply()


def _cuda_message(exc: BaseException, action: str) -> str | None:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return (
            f"out of GPU memory while {action}: use a smaller --batch-size, --dtype float16, or another GPU "
            f"({text[:160]})"
        )
    lowered = text.lower()
    if "no cuda gpus are available" in lowered or "not compiled with cuda" in lowered or "no kernel image" in lowered:
        return f"no usable CUDA GPU while {action}: use --device cpu ({text[:160]})"
    if "invalid device ordinal" in lowered:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return f"that CUDA device does not exist while {action} (this machine has {count} GPU(s)): pick cuda:0..."
    if "expected all tensors to be on the same device" in lowered or "device-side assert" in lowered:
        return f"a tensor was on the wrong device while {action}; this is a clipmath bug, please report it ({text})"
    if "cuda" in lowered or "cublas" in lowered or "cudnn" in lowered:
        return f"CUDA error while {action}: {text[:200]}"
    return None


@contextlib.contextmanager
def cuda_errors(action: str) -> Iterator[None]:
    """Re-raise CUDA failures inside the block as a one-line :class:`ModelLoadError` naming ``action``."""
    try:
        yield
    except (RuntimeError, AssertionError) as exc:
        message = _cuda_message(exc, action)
        if message is None:
            raise
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        raise ModelLoadError(message) from None


def move_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``model.to(device, dtype)`` with one-line CUDA errors."""
    with cuda_errors(f"moving the model to {device}"):
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device``; to CUDA through pinned memory without blocking the host."""
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
