"""How an option is declared once: a dataclass field whose metadata holds its help text and bounds.

Trainer settings, caption decoder options and other configs are dataclasses; front ends generate their options from
the fields: the name, the type, the default and ``metadata`` (``help``, ``minimum``, ``maximum``, ``flag``,
``short``, ``choices``, ``required``)::

    epochs: int = setting(10, "Passes over the training data.", minimum=1)

Nothing here names a command-line flag: ``flag`` only says how a front end that has flags should spell the field
when its own spelling would mislead (``base`` -> ``--lm``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from clipmath.errors import ClipmathError

__all__ = ["check_fields", "field_help", "field_meta", "setting", "settings_fields", "settings_from", "value_type"]


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    short: str | None = None,
    required: bool = False,
    shared: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field declaring one option (``required``: no default a run could use; ``shared``: a front end
    may fill it from an option of its own, such as the device every command takes)."""
    metadata = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices, "flag": flag,
                "short": short, "required": required, "shared": shared}  # fmt: skip
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def field_meta(cls: type, name: str) -> dict[str, Any]:
    """The option metadata of field ``name``: its own, or that of the base class that declared it (a subclass may
    change a default with a plain ``epochs: int = 300``)."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata.get("help"):
            return dict(declared.metadata)
    return {}


def field_help(cls: type, name: str) -> str:
    return str(field_meta(cls, name).get("help") or "")


def settings_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that are options (those with help text, here or in a base class)."""
    return [f for f in dataclasses.fields(cls) if field_help(cls, f.name)]


def check_fields(settings: Any) -> None:
    """Raise :class:`ClipmathError` naming the field for a value outside its declared bounds or choices, a
    non-finite number, or a required field left empty."""
    for item in settings_fields(type(settings)):
        value = getattr(settings, item.name)
        meta = field_meta(type(settings), item.name)
        if value is None:
            if meta.get("required"):
                raise ClipmathError(f"'{item.name}' is required")
            continue
        if meta.get("choices") and value not in meta["choices"]:
            raise ClipmathError(f"'{item.name}' is one of {', '.join(meta['choices'])}, not {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise ClipmathError(f"'{item.name}' must be a finite number, not {value}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ClipmathError(f"'{item.name}' must be at least {meta['minimum']}, not {value}")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise ClipmathError(f"'{item.name}' must be at most {meta['maximum']}, not {value}")


def value_type(cls: type, item: dataclasses.Field) -> tuple[Any, bool]:
    """``(type, optional)`` of a field, with ``X | None`` unwrapped (string annotations resolved)."""
    hint = typing.get_type_hints(cls)[item.name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def settings_from(cls: type, given: Mapping[str, Any], base: Any = None) -> Any:
    """An instance of settings dataclass ``cls`` (or ``base`` with fields replaced) from ``given``: text values
    are read as their fields' types (``none`` clears an optional field); the result is checked. Unknown names
    raise :class:`ClipmathError` listing the fields."""
    known = {item.name: item for item in settings_fields(cls)}
    unknown = [name for name in given if name not in known]
    if unknown:
        raise ClipmathError(f"unknown setting '{unknown[0]}'; the settings are {', '.join(known)}")
    values = {name: _read(cls, known[name], value) for name, value in given.items()}
    settings = dataclasses.replace(base, **values) if base is not None else cls(**values)
    check_fields(settings)
    return settings


def _read(cls: type, item: dataclasses.Field, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    kind, optional = value_type(cls, item)
    if optional and value.lower() == "none":
        return None
    try:
        if kind is bool:
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError(value)
            return value.lower() in _TRUE
        return kind(value) if kind in (int, float) else value
    except ValueError:
        raise ClipmathError(f"'{item.name}' takes {getattr(kind, '__name__', kind)}, not {value!r}") from None
