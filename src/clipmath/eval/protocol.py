"""The benchmark protocol: how a registered benchmark is prepared and scored, step by step.

The runner (:func:`clipmath.eval.evaluate`) knows nothing about any benchmark; for each it calls its spec's
protocol in this order::

    prepared = protocol.prepare(spec, datasets, encoder, cache_root, config)   # limit queries, gallery features
    for each selected method:
        method = protocol.load_method(name, encoder, checkpoint)               # a compose method by default
        reason = protocol.missing_inputs(spec, method)                         # skipped with a note if not None
        outcome = protocol.score(prepared, method, MethodRun(...))             # result rows (+ rankings)

A retrieval benchmark overrides only :meth:`BenchmarkProtocol.score` (see :mod:`clipmath.eval.scoring`). A
benchmark of another kind (e.g. image pairs captioned and scored with caption metrics) overrides
:meth:`~BenchmarkProtocol.load_method` (a captioner instead of a composer), :meth:`~BenchmarkProtocol.method_names`
and :meth:`~BenchmarkProtocol.score` (its :class:`MethodScore` rows hold its own metrics, e.g. ``CIDEr``), and may
override :meth:`~BenchmarkProtocol.prepare` when it needs no gallery features. Reports, tables, JSON and the
training hook then work unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipmath.eval.benchmarks import BenchmarkSpec
from clipmath.eval.config import EvalConfig
from clipmath.eval.features import GalleryFeatures, gallery_features
from clipmath.eval.report import MethodScore


@dataclass
class PreparedBenchmark:
    """A benchmark split ready to score any number of methods: its datasets (limited) and gallery features."""

    benchmark: str
    split: str
    datasets: list[Any]
    features: GalleryFeatures | None
    spec: BenchmarkSpec | None = None


@dataclass
class MethodRun:
    """One method's scoring job: its name and checkpoint (for the rows), the encoder (text embeddings shared by
    the methods of one evaluation) and the run's config."""

    name: str
    checkpoint: str | None
    encoder: Any
    config: EvalConfig

    def row(self, dataset: Any, metrics: dict[str, float], started: float, lam: float | None = None) -> MethodScore:
        """A result row for ``dataset`` whose scoring began at ``started`` (``time.perf_counter()``)."""
        return MethodScore(self.name, dataset.name, dataset.split, len(dataset.queries), metrics, lam,
                           self.checkpoint, time.perf_counter() - started)  # fmt: skip


@dataclass
class MethodOutcome:
    """What scoring one method produced: result rows, and per ``(method, dataset name)`` the rankings a test
    server's submission file is written from (empty for benchmarks without one)."""

    rows: list[MethodScore] = field(default_factory=list)
    rankings: dict[tuple[str, str], Any] = field(default_factory=dict)


def limit_queries(dataset: Any, limit: int | None) -> Any:
    """``dataset`` with only its first ``limit`` queries (the gallery is unchanged)."""
    if limit is None or limit >= len(dataset.queries):
        return dataset
    return replace(dataset, queries=list(dataset.queries[:limit]))


class BenchmarkProtocol:
    """Default steps shared by every benchmark; subclasses implement :meth:`score` (see the module docstring)."""

    def prepare(
        self, spec: BenchmarkSpec, datasets: Sequence[Any], encoder: Any, cache_root: str | Path | None,
        config: EvalConfig,
    ) -> PreparedBenchmark:  # fmt: skip
        """Apply ``config.limit`` and compute (or load from the cache) the gallery features."""
        items = [limit_queries(d, config.limit) for d in datasets]
        features = gallery_features(items, encoder, cache_root, config)
        return PreparedBenchmark(spec.name, items[0].split, items, features, spec)

    def method_names(self) -> tuple[list[str], list[str]]:
        """``(zero-shot, learned)`` method names that ``all`` expands to (learned ones need a checkpoint)."""
        from clipmath.compose import learned_methods, zero_shot_methods

        return zero_shot_methods(), learned_methods()

    def load_method(self, name: str, encoder: Any, checkpoint: str | None) -> Any:
        """The method called ``name`` (a compose method here), with its checkpoint loaded."""
        from clipmath.compose import get_composer

        return get_composer(name, encoder, checkpoint)

    def missing_inputs(self, spec: BenchmarkSpec, method: Any) -> str | None:
        """Why ``method`` cannot run on ``spec``'s queries (from its ``needs``), or ``None``."""
        return spec.missing_inputs(getattr(method, "needs", ()))

    def has_ground_truth(self, dataset: Any) -> bool:
        """Whether ``dataset`` can be scored here (else it is only ranked, e.g. for a test server)."""
        return bool(getattr(dataset, "has_targets", True))

    def describe(self, spec: BenchmarkSpec, config: EvalConfig) -> tuple[dict[str, Any], list[str]]:
        """Facts the report shows for this run (``{"oracle": ...}``) and notes a reader must know."""
        return {}, []

    def score(self, prepared: PreparedBenchmark, method: Any, run: MethodRun) -> MethodOutcome:
        """Result rows of one method on a prepared benchmark."""
        raise NotImplementedError


class TextMemo:
    """The encoder, remembering text embeddings per string (benchmark queries repeat words and captions)."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._texts: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            for text, vector in zip(new, self._encoder.encode_texts(new, batch_size=batch_size, progress=progress)):
                self._texts[text] = vector
        if not texts:
            return np.zeros((0, self._encoder.dim), dtype=np.float32)
        return np.stack([self._texts[t] for t in texts])
