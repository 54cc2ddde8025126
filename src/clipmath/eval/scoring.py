"""The protocols of the built-in benchmarks: composed retrieval (FashionIQ, CIRR, CIRCO) and SIMAT.

* :class:`RetrievalProtocol`: per dataset, compose one query vector per query (the reference from the cached
  gallery vectors, never encoded twice; FashionIQ by default averages both caption orders, as SEARLE does), rank
  the gallery (:func:`~clipmath.eval.cir.rank_cir`) and score it (:func:`~clipmath.eval.cir.cir_metrics`); test
  splits are ranked only, their rankings kept for the submission file. Variants (FashionIQ's categories) get an
  averaged row.
* :class:`SimatProtocol`: per λ (methods that use one), compose source image + words, retrieve the best other image
  and let the oracle judge it (:mod:`clipmath.eval.simat`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from clipmath.compose import CompositionQuery, normalise
from clipmath.eval.benchmarks import BenchmarkSpec
from clipmath.eval.cir import EvalResult, cir_metrics, mean_metrics, rank_cir
from clipmath.eval.config import EvalConfig
from clipmath.eval.protocol import BenchmarkProtocol, MethodOutcome, MethodRun, PreparedBenchmark
from clipmath.eval.ranking import EmbeddingScores, ScoreMatrix
from clipmath.eval.report import MethodScore
from clipmath.eval.simat import retrieve_simat, simat_score


def compose_in_blocks(composer: Any, encoder: Any, queries: list[CompositionQuery], config: EvalConfig, desc: str):
    """``composer.compose`` over ``queries`` a block at a time (a progress bar when there are several blocks)."""
    chunk = 1024
    starts = range(0, len(queries), chunk)
    shown = config.progress and len(starts) > 1
    parts = [
        composer.compose(encoder, queries[start : start + chunk], config.batch_size)
        for start in tqdm(starts, desc=desc, unit="block", leave=False, disable=not shown)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def show_ranking(dataset: Any, config: EvalConfig) -> bool:
    """A ranking progress bar only where ranking takes a while (e.g. CIRCO's 123k-image gallery)."""
    return config.progress and len(dataset.queries) * len(dataset.gallery_ids) > 50_000_000


def searched_gallery(composer: Any, gallery: np.ndarray) -> np.ndarray:
    """The gallery vectors a composer searches (learned heads may map the gallery too)."""
    return composer.transform_gallery(gallery) if getattr(composer, "transforms_gallery", False) else gallery


class RetrievalProtocol(BenchmarkProtocol):
    """Composed image retrieval: reference image + relative caption -> ranked gallery -> Recall@K / mAP@K."""

    def describe(self, spec: BenchmarkSpec, config: EvalConfig) -> tuple[dict[str, Any], list[str]]:
        return ({"caption_orders": config.caption_orders} if spec.two_captions else {}), []

    @staticmethod
    def queries(dataset: Any, gallery: np.ndarray, reversed_order: bool = False) -> list[CompositionQuery]:
        """The split's queries: reference vectors from ``gallery``, the caption (or its reversed order)."""
        row = dataset.gallery_row
        return [
            CompositionQuery(
                reference=gallery[row[q.reference_id]],
                text=q.extra["caption_reversed"] if reversed_order else q.caption,
                reference_id=q.reference_id,
            )
            for q in dataset.queries
        ]

    @staticmethod
    def both_orders(dataset: Any, config: EvalConfig) -> bool:
        return (
            bool(dataset.queries)
            and config.caption_orders == "both"
            and all("caption_reversed" in q.extra for q in dataset.queries)
        )

    def query_vectors(self, dataset: Any, gallery: np.ndarray, composer: Any, run: MethodRun) -> np.ndarray:
        """One composed vector per query; both caption orders averaged where the queries carry both."""
        config = run.config
        vectors = compose_in_blocks(composer, run.encoder, self.queries(dataset, gallery), config,
                                    f"composing {run.name} ({dataset.name})")  # fmt: skip
        if self.both_orders(dataset, config):
            reverse = compose_in_blocks(
                composer, run.encoder, self.queries(dataset, gallery, True), config, f"composing {run.name} (reversed)"
            )
            vectors = normalise(normalise(vectors) + normalise(reverse))
        return vectors

    def method_scores(self, dataset: Any, gallery: np.ndarray, method: Any, run: MethodRun) -> np.ndarray:
        """``(queries, gallery)`` scores of a method that scores the gallery its own way (SEIZE), both caption
        orders averaged where the queries carry both."""
        orders = (False, True) if self.both_orders(dataset, run.config) else (False,)
        total = np.zeros((len(dataset.queries), len(gallery)), dtype=np.float32)
        for reversed_order in orders:
            queries = self.queries(dataset, gallery, reversed_order)
            for start in range(0, len(queries), 256):
                block = queries[start : start + 256]
                total[start : start + len(block)] += method.gallery_scores(run.encoder, block, gallery)
        return total / len(orders)

    def score(self, prepared: PreparedBenchmark, method: Any, run: MethodRun) -> MethodOutcome:
        outcome = MethodOutcome()
        assert prepared.features is not None
        for dataset in prepared.datasets:
            started = time.perf_counter()
            gallery = prepared.features.vectors[dataset.name]
            if hasattr(method, "gallery_scores"):  # SEIZE ranks by its own score of every gallery vector
                scores: Any = ScoreMatrix(self.method_scores(dataset, gallery, method, run))
            else:
                scores = EmbeddingScores(self.query_vectors(dataset, gallery, method, run),
                                         searched_gallery(method, gallery))  # fmt: skip
            ranking = rank_cir(dataset, scores, run.config.depth, show_ranking(dataset, run.config))
            outcome.rankings[(run.name, dataset.name)] = ranking
            metrics = cir_metrics(dataset, ranking).metrics if dataset.has_targets else {}
            outcome.rows.append(run.row(dataset, metrics, started))
        rows = outcome.rows
        if prepared.spec is not None and prepared.spec.variants and len(rows) > 1 and all(r.metrics for r in rows):
            results = [EvalResult(prepared.benchmark, r.dataset, r.split, r.num_queries, r.metrics) for r in rows]
            average = mean_metrics(results, f"{prepared.benchmark}-average")
            rows.append(MethodScore(run.name, average.name, average.split, average.num_queries, average.metrics,
                                    None, run.checkpoint, sum(r.seconds for r in rows)))  # fmt: skip
        return outcome


class SimatProtocol(BenchmarkProtocol):
    """SIMAT: source image + λ·(target word − source word) -> best other image -> the oracle's verdict."""

    def describe(self, spec: BenchmarkSpec, config: EvalConfig) -> tuple[dict[str, Any], list[str]]:
        label = config.oracle.label if config.oracle else "ground-truth labels"
        return {"oracle": label}, [f"{spec.title} oracle: {label}"]

    def score(self, prepared: PreparedBenchmark, method: Any, run: MethodRun) -> MethodOutcome:
        outcome = MethodOutcome()
        assert prepared.features is not None
        config = run.config
        lams: Sequence[float | None] = config.lams if "lam" in getattr(method, "needs", ()) else [None]
        for dataset in prepared.datasets:
            gallery = prepared.features.vectors[dataset.name]
            searched = searched_gallery(method, gallery)
            row = dataset.gallery_row
            for lam in lams:
                started = time.perf_counter()
                queries = [
                    CompositionQuery(reference=gallery[row[q.source_id]], source=q.source_word, target=q.target_word,
                                     lam=1.0 if lam is None else lam, reference_id=q.source_id)
                    for q in dataset.queries
                ]  # fmt: skip
                vectors = compose_in_blocks(method, run.encoder, queries, config, f"composing {run.name}")
                retrieved = retrieve_simat(dataset, EmbeddingScores(vectors, searched), show_ranking(dataset, config))
                result = simat_score(dataset, retrieved, config.oracle)
                outcome.rows.append(run.row(dataset, {"score": result.score, **result.per_field}, started, lam))
        return outcome


#: The protocol objects the built-in specs name.
RETRIEVAL = RetrievalProtocol()
SIMAT = SimatProtocol()
