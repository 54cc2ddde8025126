"""The encoder registry: one :class:`EncoderSpec` per named model, looked up by :func:`clipmath.encoders.load_encoder`.

Named models are registry entries (``offline-imagenet-minilm``, ``tiny-random-clip[:SEED]``); Hugging Face hub names
and local folders are not entries, they are what ``load_encoder`` falls back to for any other name. Adding a
model is one loader function plus one registration::

    from clipmath.encoders import EncoderSpec, register_encoder

    register_encoder(EncoderSpec(
        name="my-clip", description="my CLIP variant", pretrained=True, build="my_package.models:load_my_clip",
    ))

A loader is called as ``loader(arg, options)``: ``arg`` is what followed ``name:`` (``None`` without one; only specs
with an ``arg_name`` accept one) and ``options`` a :class:`LoadOptions` (device, image transform, dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipmath.encoders.transforms import ImageTransform
from clipmath.errors import ModelLoadError
from clipmath.registry import Registry, import_ref

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

__all__ = ["ENCODERS", "EncoderSpec", "LoadOptions", "register_encoder"]


@dataclass(frozen=True)
class LoadOptions:
    """How to load any encoder: where it runs, how images are prepared, in which precision (one of
    ``DTYPE_CHOICES``, see :mod:`clipmath.encoders.precision`; aliases such as ``fp16`` are made canonical)."""

    device: str = "cpu"
    transform: ImageTransform = ImageTransform()
    dtype: str = "auto"

    def __post_init__(self) -> None:
        from clipmath.encoders.precision import dtype_name  # imports torch: only when a model is loaded

        object.__setattr__(self, "dtype", dtype_name(self.dtype))


@dataclass(frozen=True)
class EncoderSpec:
    """One named encoder: ``pretrained`` says whether it has real trained weights (results mean something);
    ``arg_name`` names what may follow ``name:`` (``None``: nothing may)."""

    name: str
    description: str
    pretrained: bool
    build: str | Callable[[str | None, LoadOptions], Encoder]
    arg_name: str | None = None

    def load(self, arg: str | None, options: LoadOptions) -> Encoder:
        if arg is not None and self.arg_name is None:
            raise ModelLoadError(f"encoder '{self.name}' takes no ':argument' (got ':{arg}')")
        build: Any = import_ref(self.build) if isinstance(self.build, str) else self.build
        return build(arg, options)


#: Every named encoder; built-ins are registered by ``clipmath.encoders.builtin_encoders``.
ENCODERS: Registry[EncoderSpec] = Registry(
    "encoder", error=ModelLoadError, builtins="clipmath.encoders.builtin_encoders", arg_name="argument"
)


def register_encoder(spec: EncoderSpec, *, aliases: tuple[str, ...] = (), replace: bool = False) -> EncoderSpec:
    """Register ``spec`` under its own name (``ValueError`` if taken, unless ``replace``)."""
    ENCODERS.register(spec.name, spec, aliases=aliases, replace=replace)
    return spec
