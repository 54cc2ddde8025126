"""Benchmark evaluation, independent of any model: rankings, official metrics, test-server files.

Inputs are similarities between a dataset's queries and its gallery (same order as ``dataset.queries`` and
``dataset.gallery_ids``), as a dense array or an :class:`EmbeddingScores` over vectors (memory-bounded), or
rankings made elsewhere (:meth:`CIRRanking.from_ranked_ids`).

* :mod:`.ranking`: top-k with a deterministic tie rule (score desc, then gallery order) and exclusions.
* :mod:`.retrieval_metrics`: Recall@K, CIRCO's AP@K / mAP@K on ranked id lists.
* :mod:`.cir`: FashionIQ / CIRR / CIRCO evaluation (:func:`evaluate_cir`, :func:`fashioniq_average`).
* :mod:`.simat`: the SIMAT score with a pluggable oracle (:func:`evaluate_simat`).
* :mod:`.submissions`: CIRR and CIRCO test-server prediction files, validated.
* :mod:`.benchmarks`: :data:`BENCHMARKS`, the registry of :class:`BenchmarkSpec` (splits, defaults, monitor metric,
  query fields, λ, submission format, how to load and score); :func:`load_benchmark` by name.
* The whole run for any front end: :class:`EvalJob` (benchmark, folder, methods, settings) checked and loaded by
  :func:`plan_eval` before a model loads, then :func:`run_eval` (:mod:`.job`). Underneath, :mod:`.runner`
  (:func:`evaluate`, :func:`resolve_methods`) over a :class:`BenchmarkProtocol` (:mod:`.protocol`; the built-in
  ones in :mod:`.scoring`), gallery features cached by :mod:`.features`, the report in :mod:`.report`,
  :func:`write_submissions`, and the training hook :class:`BenchmarkValidator` (:mod:`.validation`). These need
  the model stack (torch), so they are imported on first use of their names here.
"""

from __future__ import annotations

from typing import Any

from clipmath.eval.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    BenchmarkSpec,
    SubmissionFormat,
    find_benchmark,
    load_benchmark,
    spec_of,
)
from clipmath.eval.cir import (
    DEFAULT_DEPTH,
    CIRRanking,
    EvalResult,
    cir_metrics,
    evaluate_cir,
    fashioniq_average,
    rank_cir,
)
from clipmath.eval.config import EvalConfig
from clipmath.eval.job import EvalJob, EvalPlan, plan_eval, run_eval
from clipmath.eval.ranking import EmbeddingScores, ScoreMatrix, ScoreSource
from clipmath.eval.retrieval_metrics import average_precision_at_k, mean_average_precision_at_k, recall_at_k
from clipmath.eval.simat import (
    CaptionScoreOracle,
    GroundTruthLabelOracle,
    SimatOracle,
    SimatResult,
    evaluate_simat,
    retrieve_simat,
    simat_score,
)
from clipmath.eval.submissions import (
    circo_submission,
    cirr_submissions,
    validate_circo_submission,
    validate_cirr_submission,
    validate_submission_file,
    write_circo_submission,
    write_cirr_submissions,
    write_submissions,
)

#: Names imported on first use (they need the model stack): name -> module.
_LAZY = {
    "BenchmarkProtocol": "protocol",
    "MethodOutcome": "protocol",
    "MethodRun": "protocol",
    "PreparedBenchmark": "protocol",
    "RetrievalProtocol": "scoring",
    "SimatProtocol": "scoring",
    "EvalReport": "report",
    "MethodScore": "report",
    "evaluate": "runner",
    "prepare": "runner",
    "resolve_methods": "runner",
    "score_method": "runner",
    "BenchmarkValidator": "validation",
    "GalleryFeatures": "features",
    "gallery_features": "features",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"clipmath.eval.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipmath.eval' has no attribute {name!r}")


__all__ = [
    "BENCHMARKS",
    "DEFAULT_DEPTH",
    "BenchmarkError",
    "BenchmarkSpec",
    "EvalConfig",
    "EvalJob",
    "EvalPlan",
    "plan_eval",
    "run_eval",
    "SubmissionFormat",
    "find_benchmark",
    "load_benchmark",
    "spec_of",
    "write_submissions",
    *_LAZY,
    "CIRRanking",
    "CaptionScoreOracle",
    "EmbeddingScores",
    "EvalResult",
    "GroundTruthLabelOracle",
    "ScoreMatrix",
    "ScoreSource",
    "SimatOracle",
    "SimatResult",
    "average_precision_at_k",
    "cir_metrics",
    "circo_submission",
    "cirr_submissions",
    "evaluate_cir",
    "evaluate_simat",
    "fashioniq_average",
    "mean_average_precision_at_k",
    "rank_cir",
    "recall_at_k",
    "retrieve_simat",
    "simat_score",
    "validate_circo_submission",
    "validate_cirr_submission",
    "validate_submission_file",
    "write_circo_submission",
    "write_cirr_submissions",
]
