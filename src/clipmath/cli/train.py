"""``clipmath train NAME``: one command per entry of :data:`clipmath.train.TRAINERS`, generated from its dataclasses.

Each field of the trainer's inputs and config, and of the shared run and validation options, becomes one option:
``--field-name`` (or the field's declared spelling), its type, its default and its help text, all read from the
dataclass. Nothing here names a trainer; a new registry entry is a new command.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from clipmath.cli.options import (
    MULTI_VALUE,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    PreprocessingOpt,
    QuietOpt,
    ThreadsOpt,
    flag_of,
    option_values,
)
from clipmath.cli.output import emit
from clipmath.cli.runtime import load_model, set_threads
from clipmath.errors import ClipmathError
from clipmath.options import field_meta, settings_fields, value_type
from clipmath.train import TRAINERS, RunOptions, TrainerSpec, ValidationOptions, train
from clipmath.train.run import check_job


class _Trainers(TyperGroup):
    """``clipmath train``'s commands: one per :data:`TRAINERS` entry, made when asked for (so a trainer registered
    after this module was imported, by a plugin or a test, is a command too)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(s.name for s in TRAINERS.list() if s.name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Optional[Any]:
        if cmd_name not in self.commands and cmd_name in TRAINERS:
            one = typer.Typer(add_completion=False)
            _command(TRAINERS.get(cmd_name), one)
            self.add_command(typer.main.get_command(one), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_Trainers,
    name="train",
    help="Train the learned parts: compose methods, difference captioners, caption language models. Checkpoints are "
    "folders of safetensors + JSON (config inside); an unfinished run in --output is resumed.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Train the learned parts: compose methods, difference captioners, caption decoders and language models."""


#: options this CLI declares itself for fields every command shares (the device and precision of every command)
_SHARED_TYPES = {"device": DeviceOpt, "dtype": DtypeOpt}
#: options that are the command line's, not a trainer's: name -> (annotation, default)
_CLI_OPTIONS = {"quiet": (QuietOpt, False), "as_json": (JsonOpt, False)}
_ENCODER_OPTIONS = {"model": (ModelOpt, "auto"), "preprocessing": (PreprocessingOpt, None),
                    "threads": (ThreadsOpt, None)}  # fmt: skip


def _annotation(cls: type, item: dataclasses.Field) -> Any:
    if field_meta(cls, item.name).get("shared") and item.name in _SHARED_TYPES:
        return _SHARED_TYPES[item.name]
    meta = field_meta(cls, item.name)
    kind, optional = value_type(cls, item)
    flag = flag_of(cls, item.name)
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    if meta.get("short"):
        decls.append(meta["short"])
    shown = Optional[kind] if optional else kind
    return Annotated[shown, typer.Option(*decls, help=meta["help"])]  # bounds: checked by the core, one line


def _default(item: dataclasses.Field, cls: type) -> Any:
    if field_meta(cls, item.name).get("required"):
        return ...
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()  # type: ignore[misc]


def _groups(spec: TrainerSpec) -> list[type]:
    return [spec.inputs, spec.config, RunOptions, *([ValidationOptions] if spec.validates else [])]


def _fields(spec: TrainerSpec) -> dict[str, tuple[type, dataclasses.Field]]:
    """Every option of the command: field name -> (its settings class, the field)."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for cls in _groups(spec):
        for item in settings_fields(cls):
            if item.name == "seeds" and not spec.seeds:
                continue
            if item.name == "cache" and not spec.encoder:
                continue
            if item.name in out:
                raise TypeError(f"trainer {spec.name}: field {item.name!r} is declared twice")
            out[item.name] = (cls, item)
    return out


def _command(spec: TrainerSpec, target: typer.Typer) -> None:
    options = _fields(spec)
    extra = {**(_ENCODER_OPTIONS if spec.encoder else {"threads": _ENCODER_OPTIONS["threads"]}), **_CLI_OPTIONS}
    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for name, (cls, item) in options.items():
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(cls, item), default=_default(item, cls)
        ))  # fmt: skip
    for name, (annotation, default) in extra.items():
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )
    flags = {name: flag_of(cls, name) for name, (cls, _) in options.items()}

    def run(ctx: typer.Context, **values: Any) -> None:
        if "seeds" in values:
            values["seeds"] = option_values(ctx, values["seeds"], "--seeds", int, "integers")
        elif ctx.args:
            raise ClipmathError(f"unexpected arguments: {' '.join(ctx.args)}")
        progress = not (values["quiet"] or values["as_json"])
        try:
            groups = [
                cls(**{f.name: values[f.name] for f in settings_fields(cls) if f.name in values})
                for cls in _groups(spec)
            ]
            groups[2].progress = progress
            check_job(spec, *groups[:3], groups[3] if spec.validates else ValidationOptions())  # before the model
            if spec.encoder:
                encoder = load_model(values["model"], values.get("device", "cpu"), values["preprocessing"],
                                     "float32", values["threads"], values["as_json"])  # fmt: skip
            else:
                set_threads(values["threads"])
                encoder = None
            report = train(spec, *groups[:3], groups[3] if spec.validates else None, encoder)
        except ClipmathError as exc:
            raise type(exc)(_reworded(str(exc), flags)) from None
        emit(report.payload, values["as_json"], lambda: report.lines)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__name__ = f"train_{spec.name.replace('-', '_')}"
    help_text = spec.summary[0].upper() + spec.summary[1:] + "."
    if spec.help:
        help_text += f"\n\nExample:\n\n{spec.help.strip()}"
    target.command(spec.name, help=help_text, context_settings=MULTI_VALUE)(run)


def _reworded(message: str, flags: dict[str, str]) -> str:
    """The core quotes fields ('val_path'); this CLI's user typed flags (--val-path)."""
    for name, flag in sorted(flags.items(), key=lambda pair: -len(pair[0])):
        message = message.replace(f"set '{name}' off", f"pass --no-{flag[2:]}").replace(f"'{name}'", flag)
    return message


__all__ = ["app"]
