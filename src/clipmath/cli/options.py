"""Options shared by several commands, declared once as ``Annotated`` aliases, and the parsers they need.

A command writes ``model: ModelOpt = "auto"``; the flag, its short form and its help live here. Options whose
values have a fixed set of choices (``--preprocessing``, ``--dtype``) are checked by a click callback against the
encoders package's own lists, so every command refuses a bad value with the same one-line message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from clipmath.errors import ClipmathError

T = TypeVar("T")


def config_default(config_class: type, name: str) -> Any:
    """The default of field ``name`` of a config dataclass (what an option shows and uses when not given)."""
    for field in fields(config_class):
        if field.name == name:
            if field.default is not MISSING:
                return field.default
            if field.default_factory is not MISSING:
                return field.default_factory()
            break
    raise KeyError(f"{config_class.__name__} has no default for {name!r}")


def flag_of(cls: type, name: str) -> str:
    """How this CLI spells field ``name`` of a settings dataclass: its declared flag, else ``--field-name``."""
    from clipmath.options import field_meta

    return field_meta(cls, name).get("flag") or "--" + name.replace("_", "-")


def _choice(option: str, choices: str) -> Callable[[Optional[str]], Optional[str]]:
    """A click callback refusing values outside ``clipmath.encoders.<choices>`` (imported only when checking)."""

    def check(value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        import clipmath.encoders

        allowed = getattr(clipmath.encoders, choices)
        if value not in allowed:
            raise ClipmathError(f"{option} is one of {', '.join(allowed)}, not {value!r}")
        return value

    return check


# ---- models and devices -------------------------------------------------------------------------------------
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model: auto, offline-imagenet-minilm, tiny-random-clip, a hub name (openai/clip-vit-base-patch32) "
        "or a local folder (see `clipmath models`). Search and serve default to the store's model; a trained "
        "checkpoint only works with the model it was trained in.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        callback=_choice("--dtype", "DTYPE_CHOICES"),
        help="Precision: auto (half on CUDA, float32 on the CPU), float32, float16 or bfloat16; "
        "training keeps float32 weights and uses it for mixed precision.",
    ),
]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(min=1, help="CPU threads for torch (default: torch's choice; 1 is often fastest for small batches)."),
]
PreprocessingOpt = Annotated[
    Optional[str],
    typer.Option(
        "--preprocessing",
        callback=_choice("--preprocessing", "PREPROCESSING_CHOICES"),
        help="clip (resize + centre crop) or targetpad (pad to square first, as CLIP4Cir/SEARLE); "
        "a gallery and its queries must use the same (default: the model's own, else clip).",
    ),
]
EncodeBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images and texts per encoder batch.")]

# ---- stores and search --------------------------------------------------------------------------------------
StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Gallery store folder.")]
StoreArg = Annotated[Path, typer.Argument(help="Store folder.")]
IndexKindOpt = Annotated[
    str, typer.Option("--index", help="Vector index: exact, flat, hnsw, ivfpq or a FAISS factory string.")
]
KOpt = Annotated[int, typer.Option("--k", "-k", min=1, help="Number of results (serve: a request's default).")]
CheckpointsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--checkpoint",
        help="METHOD=PATH: trained weights of a learned compose method (repeatable; PATH alone when exactly one "
        "learned method is selected).",
    ),
]

# ---- output -------------------------------------------------------------------------------------------------
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

#: context settings of a command whose list options take several values (``--seeds 1 2 3``, ``--lam 1 2``):
#: click gives the first value to the option and the rest as extra arguments; :func:`option_values` joins them.
MULTI_VALUE = {"allow_extra_args": True}


def option_values(
    ctx: typer.Context, values: Optional[list[T]], option: str, kind: Callable[[str], T], unit: str
) -> Optional[list[T]]:
    """All values of a repeatable ``option`` (``--seeds 1 2 3``), or None when none was given."""
    extra = list(ctx.args)
    if extra and not values:
        raise ClipmathError(f"unexpected arguments: {' '.join(extra)}")
    try:
        more = [kind(value) for value in extra]
    except ValueError:
        raise ClipmathError(f"unexpected arguments: {' '.join(extra)} ({option} takes {unit})") from None
    return (list(values or []) + more) or None


def method_paths(entries: Optional[list[str]], learned: list[str], selected: Optional[list[str]] = None) -> dict:
    """``--checkpoint METHOD=PATH`` (repeatable) as ``{method: path}``; a bare ``PATH`` is allowed when exactly one
    learned method is ``selected``. ``learned`` names the methods that take a checkpoint."""
    chosen = [m for m in selected or [] if m in learned]
    paths: dict[str, str] = {}
    for entry in entries or []:
        method, sep, path = entry.partition("=")
        if sep and method in learned and path:
            paths[method] = path
        elif len(chosen) == 1:
            paths[chosen[0]] = entry
        else:
            raise ClipmathError(
                f"--checkpoint {entry}: write METHOD=PATH with METHOD one of {', '.join(learned)} "
                "(e.g. combiner=runs/combiner)"
            )
    return paths
