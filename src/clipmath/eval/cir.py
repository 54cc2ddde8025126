"""Evaluate a composed-retrieval benchmark split from query-gallery scores (or from ranked id lists).

    >>> from clipmath.data import load_cirr
    >>> from clipmath.eval import EmbeddingScores, evaluate_cir
    >>> dataset = load_cirr("/data/CIRR", "val")
    >>> # query_vectors: (len(dataset.queries), D), gallery_vectors: (len(dataset.gallery_ids), D), same order
    >>> result = evaluate_cir(dataset, EmbeddingScores(query_vectors, gallery_vectors))
    >>> result.metrics["R@1"], result.metrics["R_subset@1"]

The two steps can also run separately: :func:`rank_cir` keeps the top ``k`` (50) ids per query, removing the
reference image where the benchmark does (CIRR, CIRCO) and ranking CIRR's ``img_set`` members; :func:`cir_metrics`
scores a :class:`CIRRanking`. Rankings made elsewhere enter through :meth:`CIRRanking.from_ranked_ids`. The same
ranking feeds the test-server files in :mod:`clipmath.eval.submissions`.

Metrics reported (percentages, names as in the papers' tables):

* FashionIQ (per category): ``R@10``, ``R@50``; :func:`fashioniq_average` averages the categories.
* CIRR: ``R@1``, ``R@5``, ``R@10``, ``R@50``, ``R_subset@1``, ``R_subset@2``, ``R_subset@3`` and
  ``Avg`` = (R@5 + R_subset@1) / 2, the summary CIRR papers report.
* CIRCO: ``mAP@5``, ``mAP@10``, ``mAP@25``, ``mAP@50`` over all ground truths; ``R@5`` ... ``R@50`` counting only the
  annotated ``target_img_id`` (as CIRCO's evaluation script does); ``mAP@10[aspect]`` per semantic aspect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from clipmath.data.base import CIRDataset
from clipmath.errors import DatasetError
from clipmath.eval.benchmarks import BENCHMARKS, DEFAULT_RECALL_KS
from clipmath.eval.ranking import ScoreSource, rank_rows, score_source_for
from clipmath.eval.retrieval_metrics import check_depth, mean_average_precision_at_k, recall_at_k

#: Ranking depth that every official metric and submission file needs.
DEFAULT_DEPTH = 50
SUBSET_KS = (1, 2, 3)
MAP_KS = (5, 10, 25, 50)


@dataclass
class CIRRanking:
    """Per query of a dataset (same order): its top gallery ids, best first, excluded images already removed.

    ``subset_ranked_ids``: CIRR only, the query's ``img_set`` members other than the reference, all ranked.
    ``available``: per query, how many gallery images it could rank (to tell a short list from a complete one).
    ``removed``: per query, how many ids of a ranking made elsewhere were dropped (its reference image), which
    lowers the depth its metrics demand by as many; ``notes`` says which queries that concerned.
    """

    dataset_name: str
    split: str
    query_ids: list[str]
    ranked_ids: list[list[str]]
    subset_ranked_ids: list[list[str]] | None
    available: list[int]
    removed: list[int] | None = None
    notes: list[str] = field(default_factory=list)

    def required_depth(self, k: int) -> list[int]:
        """Per query, how many ids a metric @``k`` needs: ``min(k, available)``, less the ids removed from a
        ranking made elsewhere (a server's full-depth list that held the reference is scored as it stands)."""
        removed = self.removed or [0] * len(self.available)
        return [max(0, min(k, a) - r) for a, r in zip(self.available, removed)]

    @classmethod
    def from_ranked_ids(
        cls,
        dataset: CIRDataset,
        ranked_ids: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
        subset_ranked_ids: Mapping[str, Sequence[str]] | Sequence[Sequence[str]] | None = None,
    ) -> CIRRanking:
        """A ranking made elsewhere: per query (a list in query order, or a dict by query id), ranked gallery ids.

        Where the benchmark excludes the reference it is dropped from the given lists, with a note, and the list
        is scored as it stands (as CIRCO's own script scores its example file, whose query 189 lists the
        reference): a list of exactly the needed depth that held the reference is not "too short". Ids must
        belong to the gallery and must not repeat (``ValueError`` otherwise).
        """
        ranked = _per_query(dataset, ranked_ids, "ranked_ids")
        subsets = None if subset_ranked_ids is None else _per_query(dataset, subset_ranked_ids, "subset_ranked_ids")
        gallery = dataset.gallery_row
        for position, ids in enumerate(ranked + (subsets or [])):
            unknown = [i for i in ids if i not in gallery]
            if unknown:
                raise ValueError(
                    f"ranking {position % len(dataset.queries)} holds id '{unknown[0]}', "
                    f"which is not in the {dataset.name} {dataset.split} gallery"
                )
            if len(set(ids)) != len(ids):
                raise ValueError(f"ranking {position % len(dataset.queries)} lists an id twice")

        def drop_reference(lists: list[list[str]], always: bool) -> list[list[str]]:
            if not (dataset.exclude_reference or always):
                return lists
            return [[i for i in ids if i != q.reference_id] for ids, q in zip(lists, dataset.queries)]

        kept = drop_reference(ranked, False)
        removed = [len(given) - len(left) for given, left in zip(ranked, kept)]
        notes = [
            f"query {q.query_id}: its reference image {q.reference_id} was ranked at position "
            f"{given.index(q.reference_id) + 1}; removed (the benchmark excludes it), {len(left)} ids scored"
            for q, given, left, count in zip(dataset.queries, ranked, kept, removed)
            if count
        ]
        return cls(
            dataset_name=dataset.name,
            split=dataset.split,
            query_ids=[q.query_id for q in dataset.queries],
            ranked_ids=kept,
            subset_ranked_ids=None if subsets is None else drop_reference(subsets, True),
            available=_available(dataset),
            removed=removed,
            notes=notes,
        )


def _per_query(dataset: CIRDataset, given: Mapping[str, Sequence[str]] | Sequence[Sequence[str]], what: str):
    if isinstance(given, Mapping):
        missing = [q.query_id for q in dataset.queries if q.query_id not in given]
        if missing:
            raise ValueError(f"{what} has no ranking for query {missing[0]} ({len(missing)} missing)")
        return [[str(i) for i in given[q.query_id]] for q in dataset.queries]
    if len(given) != len(dataset.queries):
        raise ValueError(f"{what} holds {len(given)} rankings for {len(dataset.queries)} queries")
    return [[str(i) for i in ids] for ids in given]


def _available(dataset: CIRDataset) -> list[int]:
    size = len(dataset.gallery_ids)
    if not dataset.exclude_reference:
        return [size] * len(dataset.queries)
    return [size - (q.reference_id in dataset.gallery_row) for q in dataset.queries]


def subset_candidates(dataset: CIRDataset) -> list[list[str]] | None:
    """CIRR's Recall_subset candidates per query: ``img_set`` members without the reference (file order)."""
    if not dataset.queries or any(q.subset_ids is None for q in dataset.queries):
        return None
    return [list(dict.fromkeys(m for m in q.subset_ids if m != q.reference_id)) for q in dataset.queries]


def rank_cir(
    dataset: CIRDataset, scores: ScoreSource | np.ndarray, k: int = DEFAULT_DEPTH, progress: bool = False
) -> CIRRanking:
    """Rank the gallery for every query of ``dataset``: top ``k`` ids under the tie rule of :mod:`.ranking`.

    ``scores``: a ``(len(dataset.queries), len(dataset.gallery_ids))`` array, or a :class:`ScoreSource` (e.g.
    :class:`EmbeddingScores`) in the same query and gallery order.
    """
    source = score_source_for(scores, dataset, f"{dataset.name} {dataset.split}")
    row = dataset.gallery_row
    exclude = (
        [[row[q.reference_id]] if q.reference_id in row else [] for q in dataset.queries]
        if dataset.exclude_reference
        else None
    )
    results = source.top_k(k, exclude, progress)
    ids = dataset.gallery_ids
    ranked = [[ids[r] for r in rows if r >= 0] for rows in results.rows.tolist()]

    subset_ranked = None
    candidates = subset_candidates(dataset)
    if candidates is not None:
        subset_ranked = []
        for position, members in enumerate(candidates):
            rows = np.array([row[m] for m in members], dtype=np.int64)
            ordered = rank_rows(source.scores_at(position, rows), rows)
            subset_ranked.append([ids[r] for r in ordered.tolist()])
    return CIRRanking(
        dataset_name=dataset.name,
        split=dataset.split,
        query_ids=[q.query_id for q in dataset.queries],
        ranked_ids=ranked,
        subset_ranked_ids=subset_ranked,
        available=_available(dataset),
    )


@dataclass
class EvalResult:
    """Metrics of one benchmark split (percentages), with what produced them."""

    benchmark: str
    name: str
    split: str
    num_queries: int
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``cirr val (4181 queries): R@1 24.00  R@5 ...``."""
        values = "  ".join(f"{key} {value:.2f}" for key, value in self.metrics.items() if "[" not in key)
        return f"{self.name} {self.split} ({self.num_queries} queries): {values}"


@dataclass(frozen=True)
class MetricSet:
    """A group of official metrics: ``depth(ks)`` is the ranking depth it needs, ``score(dataset, ranking, ks)``
    its values. Benchmark specs name theirs (``BenchmarkSpec.metric_sets``) from :data:`METRIC_SETS`."""

    depth: Callable[[tuple[int, ...]], int]
    score: Callable[[CIRDataset, CIRRanking, tuple[int, ...]], dict[str, float]]


def _recall(dataset: CIRDataset, ranking: CIRRanking, ks: tuple[int, ...]) -> dict[str, float]:
    targets = [q.target_ids for q in dataset.queries]
    return {f"R@{k}": v for k, v in recall_at_k(ranking.ranked_ids, targets, ks).items()}


def _map(dataset: CIRDataset, ranking: CIRRanking, ks: tuple[int, ...]) -> dict[str, float]:
    targets = [q.target_ids for q in dataset.queries]
    return {f"mAP@{k}": v for k, v in mean_average_precision_at_k(ranking.ranked_ids, targets, MAP_KS).items()}


def _main_target_recall(dataset: CIRDataset, ranking: CIRRanking, ks: tuple[int, ...]) -> dict[str, float]:
    main_target = [(q.extra.get("target_img_id", q.target_ids[0]),) for q in dataset.queries]
    return {f"R@{k}": v for k, v in recall_at_k(ranking.ranked_ids, main_target, ks).items()}


def _recall_subset(dataset: CIRDataset, ranking: CIRRanking, ks: tuple[int, ...]) -> dict[str, float]:
    if ranking.subset_ranked_ids is None:
        raise ValueError(f"{dataset.name} needs the img_set rankings (subset_ranked_ids) for Recall_subset")
    targets = [q.target_ids for q in dataset.queries]
    metrics = {f"R_subset@{k}": v for k, v in recall_at_k(ranking.subset_ranked_ids, targets, SUBSET_KS).items()}
    metrics["Avg"] = (_recall(dataset, ranking, (5,))["R@5"] + metrics["R_subset@1"]) / 2.0
    return metrics


#: The metric groups a benchmark spec may name, in the order their metrics are reported.
METRIC_SETS: dict[str, MetricSet] = {
    "recall": MetricSet(max, _recall),  # Recall@K over every ground truth
    "map": MetricSet(lambda ks: max(MAP_KS + ks), _map),  # mAP@5/10/25/50 over every ground truth (CIRCO)
    "main-target-recall": MetricSet(max, _main_target_recall),  # Recall@K of the annotated target_img_id (CIRCO)
    "aspect-map": MetricSet(lambda ks: 10, lambda d, r, ks: _per_aspect_map10(d, r)),  # mAP@10 per semantic aspect
    "recall-subset": MetricSet(lambda ks: 1, _recall_subset),  # Recall_subset@1/2/3 and Avg (CIRR)
}


def cir_metrics(
    dataset: CIRDataset,
    ranking: CIRRanking,
    metric_sets: Sequence[str] | None = None,
    recall_ks: Sequence[int] | None = None,
) -> EvalResult:
    """Score ``ranking`` against ``dataset``'s ground truth with the benchmark's official metrics (its spec's
    ``metric_sets`` and ``recall_ks`` unless given)."""
    if not dataset.has_targets:
        raise DatasetError(
            f"{dataset.name} {dataset.split} has no ground truth (a test split): write a submission "
            "file for the evaluation server instead"
        )
    if ranking.query_ids != [q.query_id for q in dataset.queries]:
        raise ValueError(
            f"the ranking was made for {ranking.dataset_name} {ranking.split}, not for "
            f"{dataset.name} {dataset.split} (query ids differ)"
        )
    if metric_sets is None or recall_ks is None:
        spec_sets, spec_ks = _spec_metrics(dataset.benchmark)
        metric_sets, recall_ks = metric_sets or spec_sets, recall_ks or spec_ks
    ks = tuple(recall_ks)
    sets = [METRIC_SETS[name] for name in metric_sets]
    depth = max(s.depth(ks) for s in sets)
    check_depth(ranking.ranked_ids, depth, required=ranking.required_depth(depth))
    metrics: dict[str, float] = {}
    for metric_set in sets:
        metrics.update(metric_set.score(dataset, ranking, ks))
    return EvalResult(
        dataset.benchmark, dataset.name, dataset.split, len(dataset.queries), metrics, list(ranking.notes)
    )


def _spec_metrics(benchmark: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A registered benchmark's metric sets and Recall@K; plain recall at the default Ks for any other."""
    if benchmark in BENCHMARKS:
        spec = BENCHMARKS.get(benchmark)
        return spec.metric_sets, spec.recall_ks
    return ("recall",), DEFAULT_RECALL_KS


def _per_aspect_map10(dataset: CIRDataset, ranking: CIRRanking) -> dict[str, float]:
    by_aspect: dict[str, list[int]] = {}
    for position, query in enumerate(dataset.queries):
        for aspect in query.extra.get("semantic_aspects", ()):
            by_aspect.setdefault(aspect, []).append(position)
    out = {}
    for aspect in sorted(by_aspect):
        rows = by_aspect[aspect]
        value = mean_average_precision_at_k(
            [ranking.ranked_ids[i] for i in rows], [dataset.queries[i].target_ids for i in rows], (10,)
        )[10]
        out[f"mAP@10[{aspect}]"] = value
    return out


def evaluate_cir(
    dataset: CIRDataset, scores: ScoreSource | np.ndarray, k: int = DEFAULT_DEPTH, progress: bool = False
) -> EvalResult:
    """:func:`rank_cir` then :func:`cir_metrics`: the official metrics of a validation split."""
    if not dataset.has_targets:
        raise DatasetError(
            f"{dataset.name} {dataset.split} has no ground truth (a test split): write a submission "
            "file for the evaluation server instead"
        )
    return cir_metrics(dataset, rank_cir(dataset, scores, k, progress))


def mean_metrics(results: Sequence[EvalResult], name: str) -> EvalResult:
    """One result whose metrics are the means of ``results``' (each weighs the same; metrics all share)."""
    if not results:
        raise ValueError("nothing to average")
    keys = [key for key in results[0].metrics if all(key in r.metrics for r in results)]
    metrics = {key: float(np.mean([r.metrics[key] for r in results])) for key in keys}
    return EvalResult(results[0].benchmark, name, results[0].split, sum(r.num_queries for r in results), metrics)


def fashioniq_average(results: Sequence[EvalResult]) -> EvalResult:
    """FashionIQ's reported average: the mean over categories of each metric (each category weighs the same)."""
    if not results or any(r.benchmark != "fashioniq" for r in results):
        raise ValueError("fashioniq_average needs the FashionIQ category results")
    return mean_metrics(results, "fashioniq-average")
