"""Command-line options of the caption decoders, generated from their options dataclasses (``DECODERS``): one option
per field name, shared by the decoders that declare it (``--max-length`` fills ZeroCap's ``target_seq_length`` and
MAGIC's ``max_length``). ``clipmath caption`` and ``clipmath diff-caption`` both build their decoder options here."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import flag_of
from clipmath.errors import ClipmathError
from clipmath.options import field_help, settings_fields, value_type


@dataclass
class DecoderOption:
    """One generated option: its flag, its annotation (typer), and the field it fills in each decoder."""

    flag: str
    annotation: Any
    fields: dict[str, str] = field(default_factory=dict)


def decoder_options(skip: Iterable[str] = ()) -> dict[str, DecoderOption]:
    """Every decoder option by parameter name, except the names in ``skip`` (a command's own options)."""
    from clipmath.caption import DECODERS

    skipped = set(skip)
    options: dict[str, DecoderOption] = {}
    for spec in DECODERS.list():
        cls = spec.options_class()
        for item in settings_fields(cls):
            flag = flag_of(cls, item.name)
            param = flag[2:].replace("-", "_")
            if param in skipped:
                continue
            if param not in options:
                kind, _ = value_type(cls, item)
                decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
                option = typer.Option(*decls, help=field_help(cls, item.name))
                options[param] = DecoderOption(flag, Annotated[Optional[kind], option])
            options[param].fields[spec.name] = item.name
    return options


def decoder_names() -> str:
    """The registered decoders for a help text: ``name (what it is)``, comma-separated."""
    from clipmath.caption import DECODERS

    return ", ".join(f"{s.name} ({s.description.split(':')[0]})" for s in DECODERS.list())


def decoder_fields(options: dict[str, DecoderOption], decoder: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The decoder's fields filled by the options given (``None``: not given); an option that belongs to other
    decoders only is a user error naming its flag."""
    chosen = {p: v for p, v in given.items() if v is not None}
    foreign = [options[p].flag for p in chosen if decoder.name not in options[p].fields]
    if foreign:
        raise ClipmathError(f"{', '.join(foreign)} does not apply to the {decoder.shown_name()} decoder")
    return {options[p].fields[decoder.name]: v for p, v in chosen.items()}


def register_with_decoder_options(
    app: typer.Typer,
    name: str,
    run: Callable[..., None],
    own: dict[str, tuple[Any, Any]],
    options: dict[str, DecoderOption],
    epilog: str,
) -> None:
    """Register command ``name`` calling ``run(**values)``: its ``own`` parameters ({name: (annotation, default)},
    arguments included), then one keyword option per decoder option (default ``None``: not given)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter(n, keyword, annotation=a, default=d) for n, (a, d) in own.items()]
    parameters += [inspect.Parameter(n, keyword, annotation=o.annotation, default=None) for n, o in options.items()]

    def command(**values: Any) -> None:
        run(**values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = run.__doc__
    app.command(name, epilog=epilog)(command)
