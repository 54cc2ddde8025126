"""How a training option is declared once: a dataclass field whose metadata holds its help text and bounds.

Every trainer's settings are dataclasses (:class:`RunOptions` and :class:`ValidationOptions`, shared by all, plus the
trainer's own inputs and config in :mod:`clipmath.train.specs`); front ends generate their options from the fields:
the name, the type, the default and ``metadata`` (``help``, ``minimum``, ``maximum``, ``flag``, ``short``,
``choices``, ``required``)::

    epochs: int = setting(10, "Passes over the training data.", minimum=1)

Nothing here names a command-line flag: ``flag`` only says how a front end that has flags should spell the field
when its own spelling would mislead (``base`` -> ``--lm``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipmath.errors import ClipmathError

__all__ = ["RunOptions", "ValidationOptions", "check_fields", "field_help", "field_meta", "setting", "settings_fields"]


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


@dataclass
class RunOptions:
    """Where a run writes and how it repeats: shared by every trainer."""

    output: Path | None = setting(
        None, "Checkpoint to write: a folder (or NAME.safetensors + NAME.json). An unfinished run there is resumed; "
        "with 'seeds', one sub-folder per seed.", short="-o", required=True,
    )  # fmt: skip
    seeds: list[int] | None = setting(
        None, "Train once per seed into OUTPUT/seed-N and report the validation metric and final loss as mean ± std."
    )
    resume: bool = setting(True, "Continue an unfinished run in the output (off: overwrite it).")
    cache: Path | None = setting(None, "Folder for cached features (reused by later runs, seeds and epochs).")
    progress: bool = True

    def __post_init__(self) -> None:
        if self.output is not None:
            self.output = Path(self.output)
        if self.seeds is not None:
            if len(set(self.seeds)) != len(self.seeds):
                raise ClipmathError("'seeds': each seed once")
            self.seeds = list(self.seeds) or None


@dataclass
class ValidationOptions:
    """Held-out data scored during training: triplets of one's own, or a benchmark's validation split."""

    val_triplets: Path | None = setting(
        None, "Held-out triplets (same formats as the training triplets): Recall@1/5/10 and mean rank after every "
        "validation epoch."
    )  # fmt: skip
    val_images: Path | None = setting(None, "Folder that the validation files' paths are under (default: their folder).")
    val_gallery: Path | None = setting(
        None, "Rank validation targets among the images of this folder (default: the validation triplets' own images)."
    )
    val_dataset: str | None = setting(
        None, "Validate on a benchmark instead, with the eval harness' metrics (fashioniq, cirr, circo; simat for "
        "the adapter); needs 'val_path'."
    )  # fmt: skip
    val_path: Path | None = setting(None, "Folder of the validation benchmark, in its official layout.")
    val_split: str | None = setting(None, "Split of the validation benchmark (default: its validation split).")
