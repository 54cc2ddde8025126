"""What the five ``clipmath train`` commands share: their common options, the option → config mapping, the
encoder, the validators and the run-and-report loop.

Option defaults come from the config dataclasses in :mod:`clipmath.train.config` (``config_default``), so a
default is written once. :data:`CONFIG_OPTIONS` says, per command, which options fill which config fields (same
names); a test checks that every config field has an option and every listed option a field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import (
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    PreprocessingOpt,
    QuietOpt,
    ThreadsOpt,
    config_default,
    option_values,
)
from clipmath.cli.output import emit
from clipmath.cli.runtime import load_model
from clipmath.errors import ClipmathError
from clipmath.train.config import AdapterConfig, CombinerConfig, FinetuneConfig, OtiConfig, PhiConfig

_LOOP = ("epochs", "batch_size", "lr", "weight_decay", "seed", "device", "dtype", "amp", "max_steps", "grad_clip",
         "monitor", "save_every", "validate_every")  # fmt: skip
_OTI = ("steps", "lr", "weight_decay", "batch_size", "ema_decay", "lambda_cos", "lambda_reg", "top_k", "template",
        "prompt", "seed", "device", "dtype", "amp", "save_every")  # fmt: skip

#: command -> (config class, the command's options that fill the config field of the same name)
CONFIG_OPTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "adapter": (AdapterConfig, (*_LOOP, "tau")),
    "finetune": (FinetuneConfig, (*_LOOP, "logit_scale", "towers", "gradient_checkpointing")),
    "combiner": (CombinerConfig, (*_LOOP, "logit_scale", "projection_dim", "hidden_dim", "dropout")),
    "oti": (OtiConfig, _OTI),
    "phi": (PhiConfig, (*_LOOP, "dropout", "hidden_dim", "lambda_distil", "lambda_reg", "temperature", "top_k",
                        "prompt")),
}  # fmt: skip
#: config fields no option sets directly: ``progress`` follows --quiet and --json.
DERIVED_FIELDS = ("progress",)


def build_config(command: str, params: dict[str, Any]) -> Any:
    """The config of ``clipmath train COMMAND`` from its parsed options (``ctx.params``)."""
    config_class, names = CONFIG_OPTIONS[command]
    progress = not params["quiet"] and not params["as_json"]
    return config_class(**{name: params[name] for name in names}, progress=progress)


# ---- options every trainer shares ---------------------------------------------------------------------------
OutputOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Checkpoint to write: a folder (or NAME.safetensors + NAME.json). An unfinished run there is resumed "
        "(OTI: after its last saved batch); with --seeds, one sub-folder per seed.",
    ),
]
TripletsOpt = Annotated[
    Path,
    typer.Option(
        "--triplets",
        help="Training triplets: JSON list of {reference, caption, target}, JSON "
        "lines, or TSV reference<TAB>caption<TAB>target.",
    ),
]
ImagesRootOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--images", help="Folder that relative image paths in the file are under (default: the file's folder)."
    ),
]
LogitScaleOpt = Annotated[float, typer.Option(min=0.0, help="Scale of the cosine logits in the loss.")]
DropoutOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Dropout in the trained network.")]
HiddenDimOpt = Annotated[
    Optional[int], typer.Option(min=1, help="Hidden width (default: a multiple of the embedding size).")
]
LambdaRegOpt = Annotated[
    float, typer.Option(min=0.0, help="Weight of the concept-phrase regulariser (SEARLE's lambda_gpt; 0 turns it off).")
]
TopKOpt = Annotated[int, typer.Option(min=1, help="Concepts associated with each image.")]
PromptOpt = Annotated[str, typer.Option(help="Retrieval prompt stored for --method searle / oti ($: the image token).")]
FROM_CONFIG = object()  # the default is the config field's

#: options several trainers take: name -> (type with its flag and help, default when not a config field)
SHARED: dict[str, tuple[Any, Any]] = {
    # the training loop
    "epochs": (Annotated[int, typer.Option(min=1, help="Passes over the training data.")], FROM_CONFIG),
    "batch_size": (
        Annotated[int, typer.Option(min=2, help="Examples per step (the others in a batch are the negatives).")],
        FROM_CONFIG,
    ),
    "lr": (Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")], FROM_CONFIG),
    "weight_decay": (Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")], FROM_CONFIG),
    "seeds": (
        Annotated[
            Optional[list[int]],
            typer.Option(
                "--seeds",
                help="Train once per seed (e.g. --seeds 1 2 3) into OUTPUT/seed-N and report the "
                "validation metric and final loss as mean ± std.",
            ),
        ],
        None,
    ),
    "save_every": (
        Annotated[int, typer.Option(min=1, help="Epochs between checkpoint writes (the last is always saved).")],
        FROM_CONFIG,
    ),
    "validate_every": (
        Annotated[int, typer.Option(min=1, help="Epochs between validations (the last epoch is always validated).")],
        FROM_CONFIG,
    ),
    "max_steps": (
        Annotated[Optional[int], typer.Option(min=1, help="Stop after this many optimiser steps in all.")],
        FROM_CONFIG,
    ),
    "grad_clip": (
        Annotated[Optional[float], typer.Option(min=0.0, help="Clip the gradient norm to this value.")],
        FROM_CONFIG,
    ),
    "monitor": (
        Annotated[
            Optional[str],
            typer.Option(help="Metric summarised across --seeds first (default: recall@1 when validating)."),
        ],
        FROM_CONFIG,
    ),
    # validation
    "val_triplets": (
        Annotated[
            Optional[Path],
            typer.Option(
                "--val-triplets",
                help="Held-out triplets (same formats as --triplets): Recall@1/5/10 and mean rank after every "
                "--validate-every epochs (OTI: once, at the end).",
            ),
        ],
        None,
    ),
    "val_images": (
        Annotated[
            Optional[Path],
            typer.Option(
                "--val-images", help="Folder that the validation files' paths are under (default: their folder)."
            ),
        ],
        None,
    ),
    "val_gallery": (
        Annotated[
            Optional[Path],
            typer.Option(
                "--val-gallery",
                help="Rank validation targets among the images of this folder (default: the validation triplets' "
                "own images).",
            ),
        ],
        None,
    ),
    "val_dataset": (
        Annotated[
            Optional[str],
            typer.Option(
                "--val-dataset",
                help="Validate on a benchmark instead, with `clipmath eval`'s metrics: fashioniq, cirr or circo "
                "(simat for adapter); needs --val-path.",
            ),
        ],
        None,
    ),
    "val_path": (
        Annotated[
            Optional[Path],
            typer.Option("--val-path", help="Folder of --val-dataset, in the benchmark's official layout."),
        ],
        None,
    ),
    "val_split": (
        Annotated[
            Optional[str], typer.Option("--val-split", help="Split of --val-dataset (default: val; SIMAT: dev).")
        ],
        None,
    ),
    # the run
    "model": (ModelOpt, "auto"),
    "device": (DeviceOpt, FROM_CONFIG),
    "dtype": (DtypeOpt, "auto"),
    "preprocessing": (PreprocessingOpt, None),
    "cache": (
        Annotated[
            Optional[Path],
            typer.Option(help="Folder for cached features (reused by later runs, seeds and epochs)."),
        ],
        None,
    ),
    "seed": (Annotated[int, typer.Option(help="Random seed (weights, data order, dropout).")], FROM_CONFIG),
    "amp": (
        Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (no effect on CPU).")],
        FROM_CONFIG,
    ),
    "resume": (
        Annotated[
            bool,
            typer.Option(
                "--resume/--no-resume", help="Continue an unfinished run in --output (--no-resume overwrites it)."
            ),
        ],
        True,
    ),
    "quiet": (QuietOpt, False),
    "threads": (ThreadsOpt, None),
    "as_json": (JsonOpt, False),
}
LOOP = ("epochs", "batch_size", "lr", "weight_decay", "seeds", "save_every", "validate_every", "max_steps",
        "grad_clip", "monitor")  # fmt: skip
VALIDATION = ("val_triplets", "val_images", "val_gallery", "val_dataset", "val_path", "val_split")
RUN = ("model", "device", "dtype", "preprocessing", "seed", "amp", "resume", "quiet", "threads", "as_json")


def train_command(app: typer.Typer, name: str, shared: tuple[str, ...], help: str, **settings: Any) -> Callable:
    """Register ``clipmath train NAME``: the function's own options, then the ``shared`` ones (declared in
    :data:`SHARED`, defaults from the command's config dataclass). The function reads them from ``ctx.params``."""
    config_class = CONFIG_OPTIONS[name][0]
    config_fields = {field.name for field in fields(config_class)}
    defaults = {
        option: config_default(config_class, option) if option in config_fields else SHARED[option][1]
        for option in shared
    }
    if any(value is FROM_CONFIG for value in defaults.values()):
        raise TypeError(f"train {name}: no config default for {[k for k, v in defaults.items() if v is FROM_CONFIG]}")

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func, eval_str=True)
        own = list(signature.parameters)
        added = [
            inspect.Parameter(
                option,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=SHARED[option][0],
                default=defaults[option],
            )
            for option in shared
        ]

        def run(**values: Any) -> Any:
            return func(**{key: values[key] for key in own})

        run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])  # type: ignore
        run.__name__, run.__doc__ = func.__name__, func.__doc__
        app.command(name, help=help, **settings)(run)
        return func

    return decorate


# ---- helpers ------------------------------------------------------------------------------------------------
def seed_list(ctx: typer.Context) -> Optional[list[int]]:
    """``--seeds 1 2 3`` as a list (each seed once), or None."""
    values = option_values(ctx, ctx.params["seeds"], "--seeds", int, "integers") or []
    if len(set(values)) != len(values):
        raise ClipmathError("--seeds: each seed once")
    return values or None


def train_encoder(params: dict[str, Any]) -> Any:
    """The encoder a trainer runs in, in float32: ``--dtype`` is the training config's autocast setting."""
    return load_model(
        params["model"], params["device"], params["preprocessing"], "float32", params["threads"], params["as_json"]
    )


def triplet_validator(encoder, val_triplets, val_images, val_gallery, reencode: bool = False):
    if val_triplets is None:
        return None
    from clipmath.train.data import image_files, read_triplets
    from clipmath.train.validate import RetrievalValidator

    triplets = read_triplets(val_triplets, val_images)
    gallery = image_files(val_gallery) if val_gallery else None
    try:
        return RetrievalValidator.from_triplets(encoder, triplets, gallery, reencode=reencode)
    except ValueError as exc:
        raise ClipmathError(str(exc)) from None


def benchmark_validator(encoder, params: dict[str, Any], needs, method: str, other_given: bool, reencode=False):
    """``--val-dataset NAME --val-path DIR``: the benchmark's validation split, scored by the eval harness."""
    name, folder, split = params["val_dataset"], params["val_path"], params["val_split"]
    if name is None:
        if folder is not None or split is not None:
            raise ClipmathError("--val-path and --val-split go with --val-dataset")
        return None
    if other_given:
        raise ClipmathError("give --val-dataset or the other --val-* options, not both")
    if folder is None:
        raise ClipmathError("--val-dataset needs --val-path DIR")
    from clipmath.eval import BenchmarkValidator, EvalConfig

    config = EvalConfig(progress=not params["quiet"] and not params["as_json"], reencode=reencode)
    validator = BenchmarkValidator.for_benchmark(name, folder, encoder, split, config=config)
    validator.check_inputs(needs, method)
    return validator


def validator(encoder, params: dict[str, Any], method: str, reencode: bool = False):
    """The validator of a triplet-trained method: ``--val-dataset`` or ``--val-triplets`` (or none)."""
    return benchmark_validator(
        encoder, params, ("reference", "text"), method, params["val_triplets"] is not None, reencode
    ) or triplet_validator(encoder, params["val_triplets"], params["val_images"], params["val_gallery"], reencode)


def run_training(make_task, config, params: dict[str, Any], seeds, validate, encoder) -> None:
    """Train (once, or once per seed), then print each epoch and the checkpoint, or the whole report as JSON."""
    from clipmath.train.loop import fit, fit_seeds

    output, resume = params["output"], params["resume"]
    if validate is not None and config.monitor is None:
        config.monitor = getattr(validate, "monitor", "recall@1")
    if seeds:
        report = fit_seeds(make_task, config, seeds, output, validate, resume)
        results, summary = report.results, report.summary
    else:
        results, summary = [fit(make_task, config, output, validate, resume)], None
    payload: dict[str, Any] = {
        "model": encoder.info.label(),
        "runs": [
            {"seed": r.seed, "checkpoint": str(r.checkpoint), "examples_per_s": r.examples_per_second,
             "history": r.history}
            for r in results
        ],
    }  # fmt: skip
    if summary is not None:
        payload["summary"] = {name: {"mean": m, "std": s, "n": len(results)} for name, (m, s) in summary.items()}

    def render():
        for result in results:
            for record in result.history[result.resumed_from_epoch :]:
                metrics = "  ".join(f"{k} {v:.4f}" for k, v in record.get("metrics", {}).items())
                yield f"seed {result.seed} epoch {record['epoch']}: loss {record['loss']:.4f}  {metrics}"
            yield f"checkpoint: {result.checkpoint}  ({result.examples_per_second:.1f} examples/s)"
        for name, (mean, std) in (summary or {}).items():
            yield f"{name}: {mean:.4f} ± {std:.4f} over seeds {', '.join(map(str, seeds))}"

    emit(payload, params["as_json"], render)
