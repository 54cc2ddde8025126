"""Benchmark evaluation end to end: a model, methods and a benchmark split in, an :class:`EvalReport` out.

    >>> from clipmath.encoders import load_encoder
    >>> from clipmath.eval import EvalConfig, evaluate, load_benchmark
    >>> encoder = load_encoder("openai/clip-vit-base-patch32", preprocessing="targetpad")
    >>> datasets = load_benchmark("cirr", "/data/CIRR", "val")
    >>> report = evaluate(datasets, encoder, {"sum": None, "text": None, "combiner": "runs/combiner"})
    >>> report.rows[0].metrics["R@1"]

The runner is the same for every benchmark: it finds the datasets' :class:`~clipmath.eval.benchmarks.BenchmarkSpec`
and lets its protocol (:mod:`clipmath.eval.protocol`) prepare the split once (gallery features from the cache of
:mod:`clipmath.eval.features`), load each method, skip those whose inputs the benchmark lacks (with the reason)
and score the rest. Test splits are ranked only; their rankings feed :func:`clipmath.eval.write_submissions`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clipmath.compose.methods import split_method
from clipmath.errors import ClipmathError
from clipmath.eval.benchmarks import BENCHMARKS, BenchmarkSpec, find_benchmark, spec_of
from clipmath.eval.config import EvalConfig
from clipmath.eval.protocol import MethodRun, PreparedBenchmark, TextMemo
from clipmath.eval.report import EvalReport, MethodScore


def _as_list(datasets: Any) -> list[Any]:
    return list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]


def _spec(benchmark: str | BenchmarkSpec | None) -> BenchmarkSpec | None:
    if benchmark is None or isinstance(benchmark, BenchmarkSpec):
        return benchmark
    return find_benchmark(benchmark)[0]


def resolve_methods(
    selection: Sequence[str],
    checkpoints: Mapping[str, str] | None = None,
    benchmark: str | BenchmarkSpec | None = None,
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Method names (``all`` expands to every method) → ``({method: checkpoint}, {skipped method: reason})``.

    ``benchmark`` (a name or spec; default: compose methods) says which methods exist and which take a
    checkpoint. With ``all``, learned methods without a checkpoint are skipped; a learned method named explicitly
    without one is an error (raised when it is loaded).
    """
    spec = _spec(benchmark)
    zero_shot, learned = (spec.get_protocol() if spec else BENCHMARKS.get("cirr").get_protocol()).method_names()
    checkpoints = dict(checkpoints or {})
    unknown = [c for c in checkpoints if c not in learned]
    if unknown:
        raise ClipmathError(f"a checkpoint was given for '{unknown[0]}': only {', '.join(learned)} take checkpoints")
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in selection:
        if name == "all":
            for method in zero_shot + learned:
                if method in learned and method not in checkpoints:
                    skipped[method] = "learned method: give it a checkpoint (METHOD=PATH) to include it"
                elif method not in names:
                    names.append(method)
        elif split_method(name)[0] not in zero_shot + learned:  # a variant "ldre[captions=5]" is its method's
            raise ClipmathError(f"unknown method '{name}'; available: {', '.join(zero_shot + learned)}")
        elif name not in names:
            names.append(name)
    for method in checkpoints:
        if method not in names:
            raise ClipmathError(f"a checkpoint was given for method '{method}', which is not selected")
    return {name: checkpoints.get(name) for name in names}, {k: v for k, v in skipped.items() if k not in names}


def missing_inputs(method: Any, benchmark: str | BenchmarkSpec) -> str | None:
    """Why ``method`` (e.g. a composer) cannot run on ``benchmark``'s queries, or ``None`` if it can."""
    spec = _spec(benchmark)
    assert spec is not None
    return spec.get_protocol().missing_inputs(spec, method)


def prepare(
    datasets: Any, encoder: Any, cache_root: str | Path | None = None, config: EvalConfig | None = None
) -> PreparedBenchmark:
    """One benchmark split made ready to score any number of methods (``config.limit`` applied, gallery features
    computed or read from the cache)."""
    items = _as_list(datasets)
    spec = spec_of(items)
    return spec.get_protocol().prepare(spec, items, encoder, cache_root, config or EvalConfig())


def score_method(
    prepared: PreparedBenchmark,
    method: Any,
    encoder: Any,
    config: EvalConfig | None = None,
    name: str | None = None,
    checkpoint: str | None = None,
    texts: TextMemo | None = None,
) -> tuple[list[MethodScore], dict[tuple[str, str], Any]]:
    """Result rows of one loaded method on a prepared split, and its rankings by ``(method, dataset)``.

    ``texts``: text embeddings already computed by this encoder (shared by the methods of one evaluation).
    """
    config = config or EvalConfig()
    spec = prepared.spec or BENCHMARKS.get(prepared.benchmark)
    protocol = spec.get_protocol()
    name = name or getattr(method, "name", "method")
    reason = protocol.missing_inputs(spec, method)
    if reason:
        raise ClipmathError(f"method {name} cannot run on {spec.name}: it {reason}")
    run = MethodRun(name, checkpoint, texts if texts is not None else TextMemo(encoder), config)
    outcome = protocol.score(prepared, method, run)
    return outcome.rows, outcome.rankings


#: The former name of :func:`score_method` (composers are one kind of method).
score_composer = score_method


def evaluate(
    datasets: Any,
    encoder: Any,
    methods: Mapping[str, str | None] | Sequence[str],
    cache_root: str | Path | None = None,
    config: EvalConfig | None = None,
    skipped: Mapping[str, str] | None = None,
) -> EvalReport:
    """Evaluate every method (name → checkpoint, ``None`` for zero-shot ones) on one benchmark split.

    The split is prepared once (gallery encoded or read from the feature cache) and shared by all methods.
    Methods the benchmark cannot feed are listed in ``report.skipped`` with the reason; ``skipped`` adds reasons
    found by the caller.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    method_map = dict(methods) if isinstance(methods, Mapping) else {name: None for name in methods}
    items = _as_list(datasets)
    spec = spec_of(items)
    if config.lams != (1.0,):  # λ values other than the default: only where λ applies
        spec.check_options(lams=config.lams)
    protocol = spec.get_protocol()
    prepared = protocol.prepare(spec, items, encoder, cache_root, config)
    facts, notes = protocol.describe(spec, config)
    features = prepared.features
    report = EvalReport(
        model=encoder.info.label(),
        pretrained=encoder.info.pretrained,
        benchmark=spec.name,
        split=prepared.split,
        preprocessing=encoder.transform.key,
        datasets=prepared.datasets,
        skipped=dict(skipped or {}),
        store=features.store if features else None,
        gallery_images=features.gallery_images if features else 0,
        encoded_images=features.encoded_images if features else 0,
        limit=config.limit,
        facts=facts,
        extra_notes=notes,
    )
    texts = TextMemo(encoder)  # methods share caption and word embeddings
    for name, checkpoint in method_map.items():
        method = protocol.load_method(name, encoder, checkpoint)
        reason = protocol.missing_inputs(spec, method)
        if reason:
            report.skipped[name] = reason
            continue
        outcome = protocol.score(prepared, method, MethodRun(name, checkpoint, texts, config))
        report.rows += outcome.rows
        report.rankings.update(outcome.rankings)
    report.seconds = time.perf_counter() - started
    return report
