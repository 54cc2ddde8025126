"""One evaluation as a front end asks for it: a benchmark by name and folder, the methods and their checkpoints,
the run's settings. :func:`plan_eval` checks all of it and reads the annotations before any model loads;
:func:`run_eval` evaluates the plan with an encoder and writes the test-server files it asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipmath.eval.benchmarks import BenchmarkError, BenchmarkSpec, find_benchmark, load_benchmark
from clipmath.eval.config import EvalConfig
from clipmath.eval.submissions import write_submissions


@dataclass(frozen=True)
class EvalJob:
    """What to evaluate. ``methods`` empty: the benchmark's own default; ``all`` expands to every method.
    ``checkpoints``: ``{learned method: folder}``. ``lams`` empty: λ = 1 where a benchmark takes λ. ``submission``:
    where the test-server file(s) go (required on a split without ground truth). ``cache``: the feature-cache root."""

    dataset: str
    path: Path
    split: str | None = None
    methods: tuple[str, ...] = ()
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    category: str | None = None
    lams: tuple[float, ...] = ()
    oracle: str | None = None
    caption_orders: str = "both"
    limit: int | None = None
    submission: Path | None = None
    cache: Path | None = None


@dataclass
class EvalPlan:
    """A checked job: the benchmark, its loaded split(s), the methods that run and those skipped with the reason."""

    job: EvalJob
    spec: BenchmarkSpec
    datasets: list[Any]
    methods: dict[str, str | None]
    skipped: dict[str, str]
    config: EvalConfig

    @property
    def split(self) -> str:
        return self.datasets[0].split


def plan_eval(job: EvalJob, batch_size: int = 64, progress: bool = True) -> EvalPlan:
    """Check ``job`` against its benchmark's rules and load its split's annotations (no model is loaded)."""
    from clipmath.eval.runner import resolve_methods  # the runner needs the model stack

    spec, _ = find_benchmark(job.dataset)
    methods, skipped = resolve_methods(list(job.methods) or [spec.default_method], job.checkpoints, spec)
    spec.check_options(lams=list(job.lams), submission=job.submission is not None, limit=job.limit)
    datasets = load_benchmark(job.dataset, job.path, job.split, job.category)
    if spec.submission is not None and not datasets[0].has_targets and job.submission is None:
        raise BenchmarkError(
            f"{spec.name} {datasets[0].split} has no ground truth: give a 'submission' path to write the server file to"
        )
    config = EvalConfig(lams=tuple(job.lams) or (1.0,), limit=job.limit, caption_orders=job.caption_orders,
                        oracle=spec.make_oracle(job.oracle, job.path), batch_size=batch_size,
                        progress=progress)  # fmt: skip
    return EvalPlan(job, spec, datasets, methods, skipped, config)


def run_eval(plan: EvalPlan, encoder: Any) -> tuple[Any, list[Path]]:
    """Evaluate ``plan`` with ``encoder``: ``(EvalReport, submission files written)``."""
    from clipmath.eval.runner import evaluate

    report = evaluate(plan.datasets, encoder, plan.methods, plan.job.cache, plan.config, plan.skipped)
    if not report.rows:
        reasons = "; ".join(f"{m} {r}" for m, r in report.skipped.items())
        raise BenchmarkError(f"no selected method runs on {plan.spec.name}: {reasons}")
    written = write_submissions(report, plan.job.submission) if plan.job.submission is not None else []
    return report, written
