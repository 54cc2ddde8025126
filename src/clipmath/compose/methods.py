"""The compose-method registry: one :class:`MethodSpec` per method, looked up by name in :data:`METHODS`.

A spec carries a method's facts (what query fields it needs, whether it is learned, which checkpoint kind and
``clipmath train`` command make its weights) and a lazy ``build``, so listing methods imports no method code.
Adding a method is one file holding its :class:`~clipmath.compose.base.Composer` plus one registration::

    from clipmath.compose import MethodSpec, register_method

    register_method(MethodSpec(
        name="halfway", description="midpoint of image and text", needs=("reference", "text"),
        build="my_package.halfway:Halfway",
    ))

A zero-shot ``build`` is called with no argument; a learned one (``learned=True``) with ``(encoder, checkpoint)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipmath.compose.base import Composer
from clipmath.errors import ComposeError
from clipmath.registry import Registry, import_ref

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

__all__ = [
    "METHODS",
    "MethodSpec",
    "available_methods",
    "get_composer",
    "learned_methods",
    "method_spec",
    "register_method",
    "zero_shot_methods",
]

#: The fields of :class:`~clipmath.compose.base.CompositionQuery` a method may need ("terms": an expression).
QUERY_NEEDS = ("reference", "text", "source", "target", "lam", "terms")


@dataclass(frozen=True)
class MethodSpec:
    """One compose method: its facts and how to build it.

    ``needs``: query fields it reads; ``build``: ``"module:callable"`` (or the callable) making the
    :class:`Composer`; ``learned``: it loads trained weights from a checkpoint made by
    ``clipmath train <train_command>``.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    build: str | Callable[..., Composer]
    learned: bool = False
    train_command: str | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs if n not in QUERY_NEEDS]
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown query field(s) {unknown}; fields are {QUERY_NEEDS}")
        if self.learned and not self.train_command:
            raise ValueError(f"learned method {self.name!r} must say which `clipmath train` command makes it")

    def make(self, encoder: Encoder | None = None, checkpoint: str | None = None) -> Composer:
        """The composer; learned methods load ``checkpoint`` (and may check it against ``encoder``)."""
        if self.learned and not checkpoint:
            raise ComposeError(
                f"method '{self.name}' needs a checkpoint (train one with `clipmath train {self.train_command}`)",
                field="checkpoint",
            )
        if not self.learned and checkpoint:
            raise ComposeError(f"method '{self.name}' takes no checkpoint", field="checkpoint")
        build: Any = import_ref(self.build) if isinstance(self.build, str) else self.build
        return self.adopt(build(encoder, checkpoint) if self.learned else build())

    def adopt(self, composer: Composer) -> Composer:
        """``composer`` with this method's name and needs (stated here once; a trainer's validation composer
        is adopted the same way)."""
        composer.name, composer.needs = self.name, self.needs
        return composer


#: Every compose method by name; built-ins are registered by ``clipmath.compose.builtin_methods``.
METHODS: Registry[MethodSpec] = Registry("method", error=ComposeError, builtins="clipmath.compose.builtin_methods")


def register_method(spec: MethodSpec, *, aliases: tuple[str, ...] = (), replace: bool = False) -> MethodSpec:
    """Register ``spec`` under its own name (``ValueError`` if taken, unless ``replace``)."""
    METHODS.register(spec.name, spec, aliases=aliases, replace=replace)
    return spec


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name`` (a :class:`ComposeError` with close matches if unknown)."""
    return METHODS.get(name)


def get_composer(name: str, encoder: Encoder | None = None, checkpoint: str | None = None) -> Composer:
    """The composer called ``name``; learned methods load ``checkpoint`` (and may need the encoder)."""
    return method_spec(name).make(encoder, checkpoint)


def zero_shot_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if not spec.learned]


def learned_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if spec.learned]


def available_methods() -> dict[str, str]:
    """Every method name with its one-line description (``METHODS`` tells which ones are learned)."""
    return {name: spec.description for name, spec in METHODS.items()}
