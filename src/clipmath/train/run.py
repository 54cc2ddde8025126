"""Run a registered trainer: :func:`train` checks the settings, and :func:`fit_job` is the shared loop of every
trainer built on :func:`clipmath.train.loop.fit` (one run, or one per seed, with validation and resume).

    >>> from clipmath.train import train, RunOptions
    >>> from clipmath.train.builtin_trainers import TripletInputs
    >>> report = train("combiner", TripletInputs(triplets="train.json"), run=RunOptions(output="runs/combiner"),
    ...                encoder=load_encoder("tiny-random-clip"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from clipmath.errors import ClipmathError
from clipmath.options import check_fields
from clipmath.train.options import RunOptions, ValidationOptions
from clipmath.train.specs import TRAINERS, TrainerError, TrainerSpec, TrainJob, TrainReport

__all__ = ["benchmark_validator", "fit_job", "train", "triplet_validator", "validator"]


def train(
    trainer: str | TrainerSpec,
    inputs: Any = None,
    config: Any = None,
    run: RunOptions | None = None,
    validation: ValidationOptions | None = None,
    encoder: Any = None,
) -> TrainReport:
    """Run ``trainer`` (a :data:`TRAINERS` name or spec) and return its report. ``inputs`` / ``config`` are the
    spec's dataclasses (``config`` defaults to its defaults); ``encoder`` is the model trained in (float32)."""
    spec = TRAINERS.get(trainer) if isinstance(trainer, str) else trainer
    inputs = inputs if inputs is not None else spec.inputs()
    config = config if config is not None else spec.config()
    run = run or RunOptions()
    validation = validation or ValidationOptions()
    check_job(spec, inputs, config, run, validation)
    if spec.encoder and encoder is None:
        raise TrainerError(f"trainer '{spec.name}' needs the encoder it trains in")
    if hasattr(config, "progress"):
        config.progress = run.progress
    return spec.execute(TrainJob(spec, encoder, inputs, config, run, validation))


def check_job(spec: TrainerSpec, inputs: Any, config: Any, run: RunOptions, validation: ValidationOptions) -> None:
    """Refuse settings of the wrong class, outside their declared bounds, or that ``spec`` does not take (what a
    front end checks before it loads a model)."""
    for value, cls in ((inputs, spec.inputs), (config, spec.config)):
        if not isinstance(value, cls):
            raise TrainerError(f"trainer '{spec.name}' takes {cls.__name__}, got {type(value).__name__}")
    for settings in (inputs, config, run, validation):
        check_fields(settings)
    if run.seeds and not spec.seeds:
        raise TrainerError(f"trainer '{spec.name}' runs once: 'seeds' does not apply")
    if not spec.validates and any(vars(validation).values()):
        raise TrainerError(f"trainer '{spec.name}' takes no validation options")


def fit_job(job: TrainJob, make_task: Callable[[Any], Any], validate: Any = None) -> TrainReport:
    """Train ``make_task(config)`` once, or once per seed; the report lists each run's epochs and checkpoint."""
    from clipmath.train.loop import fit, fit_seeds

    config, output, seeds = job.config, job.run.output, job.run.seeds
    if validate is not None and config.monitor is None:
        config.monitor = getattr(validate, "monitor", "recall@1")
    if seeds:
        report = fit_seeds(make_task, config, seeds, output, validate, job.run.resume)
        results, summary = report.results, report.summary
    else:
        results, summary = [fit(make_task, config, output, validate, job.run.resume)], None
    payload: dict[str, Any] = {
        "model": job.encoder.info.label() if job.encoder is not None else None,
        "runs": [
            {"seed": r.seed, "checkpoint": str(r.checkpoint), "examples_per_s": r.examples_per_second,
             "history": r.history}
            for r in results
        ],
    }  # fmt: skip
    lines = []
    for result in results:
        for record in result.history[result.resumed_from_epoch :]:
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in record.get("metrics", {}).items())
            lines.append(f"seed {result.seed} epoch {record['epoch']}: loss {record['loss']:.4f}  {metrics}")
        lines.append(f"checkpoint: {result.checkpoint}  ({result.examples_per_second:.1f} examples/s)")
    if summary is not None:
        payload["summary"] = {name: {"mean": m, "std": s, "n": len(results)} for name, (m, s) in summary.items()}
        for name, (mean, std) in summary.items():
            lines.append(f"{name}: {mean:.4f} ± {std:.4f} over seeds {', '.join(map(str, seeds))}")
    return TrainReport(payload, lines)


# ---- validation ---------------------------------------------------------------------------------------------
def triplet_validator(job: TrainJob, reencode: bool = False, cache: Any = None) -> Any:
    """Recall on held-out triplets (``val_triplets``), or ``None`` without them."""
    options = job.validation
    if options.val_triplets is None:
        return None
    from clipmath.train.data import image_files, read_triplets
    from clipmath.train.validate import RetrievalValidator

    triplets = read_triplets(options.val_triplets, options.val_images)
    gallery = image_files(options.val_gallery) if options.val_gallery else None
    try:
        validate = RetrievalValidator.from_triplets(job.encoder, triplets, gallery, reencode=reencode)
    except ValueError as exc:
        raise ClipmathError(str(exc)) from None
    if cache is not None:
        validate.cache = cache
    return validate


def benchmark_validator(
    job: TrainJob, needs: Sequence[str], method: str, other_given: bool, reencode: bool = False
) -> Any:
    """``val_dataset`` + ``val_path``: the benchmark's validation split, scored by the eval harness."""
    options = job.validation
    name, folder, split = options.val_dataset, options.val_path, options.val_split
    if name is None:
        if folder is not None or split is not None:
            raise ClipmathError("'val_path' and 'val_split' go with 'val_dataset'")
        return None
    if other_given:
        raise ClipmathError("give 'val_dataset' or the other validation options, not both")
    if folder is None:
        raise ClipmathError("'val_dataset' needs 'val_path'")
    from clipmath.eval import BenchmarkValidator, EvalConfig

    config = EvalConfig(progress=job.run.progress, reencode=reencode)
    validate = BenchmarkValidator.for_benchmark(name, folder, job.encoder, split, config=config)
    validate.check_inputs(needs, method)
    return validate


def validator(job: TrainJob, method: str, reencode: bool = False, cache: Any = None) -> Any:
    """The validator of a triplet-trained method: a benchmark, held-out triplets, or none."""
    other = job.validation.val_triplets is not None
    return benchmark_validator(job, ("reference", "text"), method, other, reencode) or triplet_validator(
        job, reencode, cache
    )
