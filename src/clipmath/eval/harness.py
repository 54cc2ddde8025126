"""The former home of the evaluation run, kept so existing imports work: everything now lives in its own module
(:mod:`.benchmarks`, :mod:`.config`, :mod:`.features`, :mod:`.protocol`, :mod:`.scoring`, :mod:`.runner`,
:mod:`.report`, :mod:`.submissions`, :mod:`.validation`) and is re-exported by :mod:`clipmath.eval`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from clipmath.eval.benchmarks import BENCHMARKS, BenchmarkSpec, load_benchmark, spec_of
from clipmath.eval.config import EvalConfig
from clipmath.eval.features import (
    GalleryFeatures,
    default_cache_root,
    feature_store_path,
    gallery_features,
    model_slug,
)
from clipmath.eval.protocol import PreparedBenchmark, TextMemo, limit_queries
from clipmath.eval.report import EvalReport, MethodScore
from clipmath.eval.runner import evaluate, missing_inputs, prepare, resolve_methods, score_composer, score_method
from clipmath.eval.submissions import write_submissions
from clipmath.eval.validation import BenchmarkValidator


class _SpecFacts(Mapping[str, object]):
    """A read-only ``{benchmark: fact}`` view of the registry (the shape of the former per-fact dicts)."""

    def __init__(self, fact: str) -> None:
        self._fact = fact

    def __getitem__(self, name: str) -> object:
        if name not in BENCHMARKS:
            raise KeyError(name)
        return getattr(BENCHMARKS.get(name), self._fact)

    def __iter__(self) -> Iterator[str]:
        return iter(BENCHMARKS.names())

    def __len__(self) -> int:
        return len(BENCHMARKS)


#: Former per-fact tables, now views of :data:`BENCHMARKS` (use ``BENCHMARKS.get(name).<fact>`` instead).
DEFAULT_SPLITS = _SpecFacts("default_split")
DEFAULT_METHODS = _SpecFacts("default_method")
QUERY_FIELDS = _SpecFacts("query_fields")
MONITOR = _SpecFacts("monitor")

__all__ = [
    "BENCHMARKS",
    "DEFAULT_METHODS",
    "DEFAULT_SPLITS",
    "MONITOR",
    "QUERY_FIELDS",
    "BenchmarkSpec",
    "BenchmarkValidator",
    "EvalConfig",
    "EvalReport",
    "GalleryFeatures",
    "MethodScore",
    "PreparedBenchmark",
    "TextMemo",
    "default_cache_root",
    "evaluate",
    "feature_store_path",
    "gallery_features",
    "limit_queries",
    "load_benchmark",
    "missing_inputs",
    "model_slug",
    "prepare",
    "resolve_methods",
    "score_composer",
    "score_method",
    "spec_of",
    "write_submissions",
]
