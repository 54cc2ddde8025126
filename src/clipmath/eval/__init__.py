"""Benchmark evaluation, independent of any model: rankings, official metrics, test-server files.

Inputs are similarities between a dataset's queries and its gallery (same order as ``dataset.queries`` and
``dataset.gallery_ids``), as a dense array or an :class:`EmbeddingScores` over vectors (memory-bounded), or
rankings made elsewhere (:meth:`CIRRanking.from_ranked_ids`).

* :mod:`.ranking`: top-k with a deterministic tie rule (score desc, then gallery order) and exclusions.
* :mod:`.retrieval_metrics`: Recall@K, CIRCO's AP@K / mAP@K on ranked id lists.
* :mod:`.cir`: FashionIQ / CIRR / CIRCO evaluation (:func:`evaluate_cir`, :func:`fashioniq_average`).
* :mod:`.simat`: the SIMAT score with a pluggable oracle (:func:`evaluate_simat`).
* :mod:`.submissions`: CIRR and CIRCO test-server prediction files, validated.
"""

from __future__ import annotations

from clipmath.eval.cir import (
    DEFAULT_DEPTH,
    CIRRanking,
    EvalResult,
    cir_metrics,
    evaluate_cir,
    fashioniq_average,
    rank_cir,
)
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
)

__all__ = [
    "DEFAULT_DEPTH",
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
