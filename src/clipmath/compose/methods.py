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

A method with knobs names its settings dataclass (``settings=``, fields declared with
:func:`clipmath.options.setting`); every front end then takes a variant by name, the settings in brackets:
``ldre[captions=5, rewriter=lm:smollm2-135m]``. Its ``build`` is called with the settings instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipmath.compose.base import Composer
from clipmath.errors import ClipmathError, ComposeError
from clipmath.options import settings_from
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
    "split_method",
    "zero_shot_methods",
]

#: The fields of :class:`~clipmath.compose.base.CompositionQuery` a method may need ("terms": an expression).
QUERY_NEEDS = ("reference", "text", "source", "target", "lam", "terms")


@dataclass(frozen=True)
class MethodSpec:
    """One compose method: its facts and how to build it.

    ``needs``: query fields it reads; ``build``: ``"module:callable"`` (or the callable) making the
    :class:`Composer`; ``learned``: it loads trained weights from a checkpoint made by
    ``clipmath train <train_command>``; ``settings``: ``"module:Class"`` (or the class) of its knobs, given to
    ``build`` when a variant sets some.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    build: str | Callable[..., Composer]
    learned: bool = False
    train_command: str | None = None
    settings: str | type | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs if n not in QUERY_NEEDS]
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown query field(s) {unknown}; fields are {QUERY_NEEDS}")
        if self.learned and not self.train_command:
            raise ValueError(f"learned method {self.name!r} must say which `clipmath train` command makes it")

    def settings_class(self) -> type | None:
        return import_ref(self.settings) if isinstance(self.settings, str) else self.settings

    def make(
        self, encoder: Encoder | None = None, checkpoint: str | None = None, options: Mapping[str, Any] | None = None
    ) -> Composer:
        """The composer; learned methods load ``checkpoint`` (and may check it against ``encoder``); ``options``
        set fields of the method's settings (text values are read as the fields' types)."""
        if self.learned and not checkpoint:
            raise ComposeError(
                f"method '{self.name}' needs a checkpoint (train one with `clipmath train {self.train_command}`)",
                field="checkpoint",
            )
        if not self.learned and checkpoint:
            raise ComposeError(f"method '{self.name}' takes no checkpoint", field="checkpoint")
        build: Any = import_ref(self.build) if isinstance(self.build, str) else self.build
        if options:
            return self.adopt(build(self._settings(options)))
        return self.adopt(build(encoder, checkpoint) if self.learned else build())

    def _settings(self, options: Mapping[str, Any]) -> Any:
        settings_class = self.settings_class()
        if settings_class is None or self.learned:
            raise ComposeError(f"method '{self.name}' has no settings to set (got {', '.join(options)})",
                               field="method")  # fmt: skip
        try:
            return settings_from(settings_class, options)
        except ClipmathError as exc:
            raise ComposeError(f"method '{self.name}': {exc}", field="method") from None

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
    """The spec of method ``name`` or of a variant ``name[...]`` (a :class:`ComposeError` with close matches if
    unknown)."""
    return METHODS.get(split_method(name)[0] if "[" in name else name)


def get_composer(name: str, encoder: Encoder | None = None, checkpoint: str | None = None) -> Composer:
    """The composer called ``name`` (a variant ``name[field=value, ...]`` sets the method's settings); learned
    methods load ``checkpoint`` (and may need the encoder)."""
    base, options = split_method(name)
    composer = method_spec(base).make(encoder, checkpoint, options)
    if options:
        composer.name = name
    return composer


_VARIANT = re.compile(r"^\s*([^\[\]\s]+)\s*(?:\[(.*)\])?\s*$", re.S)


def split_method(text: str) -> tuple[str, dict[str, str]]:
    """``"ldre[captions=5, rewriter=lm:x]"`` -> ``("ldre", {"captions": "5", "rewriter": "lm:x"})``."""
    match = _VARIANT.match(text)
    if match is None:
        raise ComposeError(f"a method is NAME or NAME[field=value, ...], not {text!r}", field="method")
    options: dict[str, str] = {}
    for part in filter(str.strip, (match.group(2) or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ComposeError(f"method settings are field=value pairs, not {part.strip()!r}", field="method")
        options[key.strip()] = value.strip()
    return match.group(1), options


def zero_shot_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if not spec.learned]


def learned_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if spec.learned]


def available_methods() -> dict[str, str]:
    """Every method name with its one-line description (``METHODS`` tells which ones are learned)."""
    return {name: spec.description for name, spec in METHODS.items()}
