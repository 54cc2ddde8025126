"""Retrieval metrics exactly as the composed-retrieval benchmarks define them, on ranked id lists.

Every function takes, per query, a ranked list of gallery ids (best first, already without excluded images such
as the reference) and the query's relevant ids, and returns percentages (0-100), as the papers' tables do.

* **Recall@K** (FashionIQ, CIRR; CIRCO reports it too): the share of queries with a relevant id among the first
  K. With one target per query this is the usual hit rate. When K exceeds the number of rankable images the
  whole ranking counts (Recall@K then equals Recall@len(gallery)).
* **Recall_subset@K** (CIRR): Recall@K of a ranking restricted to the query's ``img_set`` members other than the
  reference (:func:`recall_at_k` on those rankings).
* **AP@K / mAP@K** (CIRCO): with ``rel(i)`` = 1 if the i-th id is a ground truth and ``P@i`` the precision of the
  first i ids, ``AP@K = sum_{i<=K} P@i * rel(i) / min(K, #ground truths)``; mAP@K is its mean over queries.
  The normaliser ``min(K, n)`` makes a ranking with all n ground truths (or K of them, when n > K) first score 1.

Rankings must reach depth K unless they already hold every rankable image; :func:`check_depth` enforces it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np


def check_depth(
    ranked: Sequence[Sequence[str]],
    k: int,
    available: Sequence[int] | None = None,
    required: Sequence[int] | None = None,
) -> None:
    """Raise ``ValueError`` if some ranking is shorter than ``k`` while more images could have been ranked.

    ``available``: per query, how many images it could rank (gallery size minus exclusions); ``None`` demands a
    depth of ``k`` from every list. ``required``: per query, the depth to demand instead (overrides both).
    """
    for position, ids in enumerate(ranked):
        if required is not None:
            limit = required[position]
        else:
            limit = k if available is None else min(k, available[position])
        if len(ids) < limit:
            raise ValueError(
                f"ranking {position} holds {len(ids)} ids (excluded images removed), fewer than the "
                f"{limit} that @{k} needs; rank deeper"
            )


def _check_unique(ids: Sequence[str], position: int) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError(f"ranking {position} lists an id twice; rankings must not repeat ids")


def hits_at_k(ranked: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int) -> np.ndarray:
    """Per query, 1.0 if any relevant id is among the first ``k`` of its ranking, else 0.0."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings for {len(relevant)} queries")
    return np.array([float(not set(rel).isdisjoint(ids[:k])) for ids, rel in zip(ranked, relevant)])


def recall_at_k(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], ks: Iterable[int] = (1, 5, 10, 50)
) -> dict[int, float]:
    """Recall@K in percent for each K: the share of queries with a relevant id in their first K results."""
    if not ranked:
        raise ValueError("no queries to evaluate")
    return {k: float(hits_at_k(ranked, relevant, k).mean() * 100.0) for k in ks}


def average_precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """CIRCO's AP@K of one ranking (a fraction in [0, 1]): summed precision at hits / ``min(k, len(relevant))``."""
    relevant = set(relevant)
    if not relevant:
        raise ValueError("AP needs at least one relevant id")
    _check_unique(ranked, 0)
    labels = np.array([i in relevant for i in ranked[:k]], dtype=np.float64)
    if labels.size == 0:
        return 0.0
    precision_at_hits = np.cumsum(labels) * labels / np.arange(1, labels.size + 1)
    return float(precision_at_hits.sum() / min(k, len(relevant)))


def mean_average_precision_at_k(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], ks: Iterable[int] = (5, 10, 25, 50)
) -> dict[int, float]:
    """mAP@K in percent for each K (CIRCO's definition, see :func:`average_precision_at_k`)."""
    if not ranked:
        raise ValueError("no queries to evaluate")
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings for {len(relevant)} queries")
    for position, ids in enumerate(ranked):
        _check_unique(ids, position)
    return {
        k: float(np.mean([average_precision_at_k(ids, rel, k) for ids, rel in zip(ranked, relevant)]) * 100.0)
        for k in ks
    }
