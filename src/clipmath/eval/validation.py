"""The training hook: :class:`BenchmarkValidator` scores a method on a benchmark's validation split every epoch, with
the same numbers ``clipmath eval`` prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipmath.errors import ClipmathError, DatasetError
from clipmath.eval.benchmarks import BenchmarkSpec, find_benchmark, load_benchmark, spec_of
from clipmath.eval.config import EvalConfig
from clipmath.eval.protocol import PreparedBenchmark
from clipmath.eval.report import EvalReport
from clipmath.eval.runner import _as_list, score_method


def monitor_metric(spec: BenchmarkSpec, datasets: Sequence[Any], config: EvalConfig) -> str:
    """The headline metric's key in :meth:`EvalReport.flat_metrics` for this run.

    ``spec.monitor`` names it for the whole benchmark (``average/R@10``); a dataset validated alone is keyed by its
    short name instead where it is not named like the benchmark (``dress/R@10``), and several λ values put the
    first λ in front (``λ=1/score``).
    """
    monitor = spec.monitor
    if len(datasets) == 1:
        metric = monitor.rsplit("/", 1)[-1]
        name = datasets[0].name
        monitor = metric if name == spec.name else f"{name.removeprefix(spec.name + '-')}/{metric}"
    if spec.takes_lam and len(config.lams) > 1:
        monitor = f"λ={config.lams[0]:g}/{monitor}"
    return monitor


class BenchmarkValidator:
    """``validate(method) -> metrics`` for :func:`clipmath.train.loop.fit`: a benchmark's validation split.

    Gallery features come from the evaluation feature store (computed on the first call), or are encoded afresh
    at every call with ``config.reencode`` (while the encoder is fine-tuned). ``monitor`` names the headline metric.
    """

    def __init__(
        self,
        datasets: Any,
        encoder: Any,
        cache_root: str | Path | None = None,
        config: EvalConfig | None = None,
    ) -> None:
        self.datasets = _as_list(datasets)
        self.spec = spec_of(self.datasets)
        self.benchmark, self.split = self.spec.name, self.datasets[0].split
        protocol = self.spec.get_protocol()
        if not all(protocol.has_ground_truth(d) for d in self.datasets):
            raise DatasetError(f"{self.benchmark} {self.split} has no ground truth: validate on a val split")
        self.encoder = encoder
        self.cache_root = cache_root
        self.config = config or EvalConfig(progress=False)
        self.monitor = monitor_metric(self.spec, self.datasets, self.config)
        self._prepared: PreparedBenchmark | None = None

    @classmethod
    def for_benchmark(
        cls, benchmark: str, root: str | Path, encoder: Any, split: str | None = None,
        cache_root: str | Path | None = None, config: EvalConfig | None = None,
    ) -> BenchmarkValidator:  # fmt: skip
        """The validator of a benchmark by name (its ``validation_split`` unless ``split`` is given)."""
        split = split or find_benchmark(benchmark)[0].default_for_validation()
        return cls(load_benchmark(benchmark, root, split), encoder, cache_root, config)

    def check_inputs(self, needs: Sequence[str], method: str) -> None:
        """Raise :class:`ClipmathError` now if a method needing ``needs`` cannot be scored on this benchmark."""
        reason = self.spec.missing_inputs(needs)
        if reason:
            raise ClipmathError(f"{method} cannot be validated on {self.benchmark}: it {reason}")

    def prepared(self) -> PreparedBenchmark:
        if self._prepared is None or self.config.reencode:
            self._prepared = self.spec.get_protocol().prepare(
                self.spec, self.datasets, self.encoder, self.cache_root, self.config
            )
        return self._prepared

    def __call__(self, method: Any) -> dict[str, float]:
        prepared = self.prepared()
        rows, _ = score_method(prepared, method, self.encoder, self.config)
        report = EvalReport(
            self.encoder.info.label(), self.encoder.info.pretrained, self.benchmark, self.split,
            self.encoder.transform.key, prepared.datasets, rows,
        )  # fmt: skip
        return report.flat_metrics()
