"""Let the pure-Python part of a CUDA ``torchvision`` wheel import beside a CPU-only torch.

``open_clip`` and ``timm`` (and transformers' image code, once torchvision is installed) import
``torchvision.transforms``. The package registry's torchvision wheels are CUDA builds: their compiled ops
(``_C.so``) link ``libtorch_cuda.so``, which a CPU torch wheel does not have. torchvision then runs without its
compiled ops, as it is designed to, except that ``torchvision/_meta_registrations.py`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` without checking that the ops exist, so ``import torchvision``
fails (``operator torchvision::nms does not exist``).

:func:`install` (called by ``import clipmath``) adds an import hook that acts once, on the first ``import
torchvision``: only when torch has no CUDA and torchvision's compiled ops cannot load, it declares those two op
schemas (no kernels), so the import succeeds. Transforms, which is all clipmath's model libraries use, work as
usual; the detection ops (``nms``, ``roi_align``...) and ``torchvision.io`` decoding stay unavailable and say so
when called. With a torch and torchvision that match, the hook does nothing. ``docs/models.md`` has the install
route and its cost.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__all__ = ["install"]

#: The ops torchvision registers fake kernels for whether or not its compiled part loaded.
_UNGUARDED_OPS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs :func:`_declare_missing_ops` just before torchvision is first imported, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - the import system's signature
        if fullname == "torchvision":
            _remove_hook()
            _declare_missing_ops()
        return None


def install() -> None:
    """Add the hook (once), unless torchvision is already imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionHook)]


def _declare_missing_ops() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    import torch

    if torch.version.cuda is not None:
        return  # a CUDA torch loads a CUDA torchvision's ops
    compiled = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if compiled is None:
        return
    try:
        torch.ops.load_library(str(compiled))
        return  # a CPU torchvision build: its ops are real
    except (OSError, RuntimeError):
        pass
    for name, schema in _UNGUARDED_OPS.items():
        if not _has_op(f"torchvision::{name}"):
            torch.library.define(f"torchvision::{name}", schema)


def _has_op(qualname: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
    except RuntimeError:
        return False
    return True
