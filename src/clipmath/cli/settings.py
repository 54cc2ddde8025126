"""A command's options generated from a settings dataclass of the core: one option per field (its flag, help, type
and default read from the field), handed to the command as one instance of the dataclass."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import flag_of
from clipmath.options import field_help, settings_fields, value_type


def with_settings(config_class: type, parameter: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command taking ``parameter: config_class``: it is exposed with one option per field instead."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        names = [item.name for item in settings_fields(config_class)]
        defaults = {item.name: item.default for item in fields(config_class) if item.default is not MISSING}
        hints = typing.get_type_hints(command, include_extras=True)  # the command's own module resolves its names
        own = [
            p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command).parameters.values()
            if p.name != parameter
        ]
        added = [_option(config_class, item, defaults) for item in settings_fields(config_class)]

        def wrapped(**values: Any) -> None:
            settings = config_class(**{name: values.pop(name) for name in names})
            command(**{parameter: settings}, **values)

        wrapped.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapped.__name__, wrapped.__doc__ = command.__name__, command.__doc__
        return wrapped

    return decorate


def _option(config_class: type, item: Any, defaults: dict[str, Any]) -> inspect.Parameter:
    kind, _ = value_type(config_class, item)
    option = typer.Option(flag_of(config_class, item.name), help=field_help(config_class, item.name))
    default = defaults.get(item.name)
    annotation = Annotated[Optional[kind], option] if default is None else Annotated[kind, option]
    return inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
