"""Tune an approximate index until it reaches a recall target, measured on a held-out sample of its own gallery.

Sample rows of the gallery are used as queries with themselves excluded (so a row never finds itself), exact search
gives their true top-k, and the index's query knobs are raised until recall@k on the sample reaches the target:
HNSW ``efSearch`` or IVF ``nprobe``, and for an index that re-ranks from the gallery's vectors, the re-rank depth
(``refine_factor``) too. Each step doubles whichever of the two gains more recall (a walk over the 2-D grid that
starts at the cheapest corner), so neither knob is pushed to its end while the other one is what limits recall. The
walk stops at the first setting that reaches the target, or when both knobs are at their largest values or recall
stops rising; then the best setting measured is kept and the report says the target was not reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipmath.search.exact import ExactIndex
from clipmath.search.faiss_index import FaissIndex

#: the deepest re-rank tried: ``k * MAX_REFINE_FACTOR`` candidates scored exactly per query
MAX_REFINE_FACTOR = 1024
#: stop when this many steps in a row raised the best recall by less than _PLATEAU_GAIN in all
_PLATEAU_STEPS = 4
_PLATEAU_GAIN = 0.002


@dataclass(frozen=True)
class TuneReport:
    """What tuning chose and the recall it measured (``reached`` False: the target was not met by any setting)."""

    target: float
    recall: float
    knob: str
    value: int
    refine_factor: int | None
    sample: int
    k: int
    reached: bool
    settings_tried: int = 1

    def describe(self) -> str:
        refine = f", re-rank x{self.refine_factor}" if self.refine_factor else ""
        verdict = "reached" if self.reached else f"NOT reached (best of {self.settings_tried} settings tried)"
        return (
            f"recall@{self.k} {self.recall:.3f} on {self.sample} held-out gallery vectors with {self.knob}="
            f"{self.value}{refine} (target {self.target:.2f} {verdict})"
        )


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (valid rows >= 0) found in the same row of ``found``."""
    hits = [len(set(t[t >= 0].tolist()) & set(f.tolist())) / max(1, int((t >= 0).sum())) for t, f in zip(truth, found)]
    return float(np.mean(hits)) if hits else 1.0


def _knob_values(index: FaissIndex, knob: str | None) -> list[int]:
    if hasattr(index, "knob_values"):  # an index served elsewhere (Milvus) knows its own ranges
        return index.knob_values(knob)
    if knob is None:
        return [0]
    if knob == "nprobe":
        import faiss

        nlist = faiss.extract_index_ivf(index.index).nlist
        values = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192) if v < nlist]
        return values + [nlist]
    return [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def _refine_factors(index: FaissIndex, max_factor: int) -> list[int | None]:
    if not (index.params.refine and getattr(index, "vectors", None) is not None):
        return [None]
    start = max(1, index.params.refine_factor)
    return [start * 2**i for i in range(64) if start * 2**i <= max(start, max_factor)]


def tune_recall(
    index: FaissIndex,
    vectors: np.ndarray,
    target: float,
    k: int = 10,
    sample: int = 500,
    seed: int = 0,
    max_refine_factor: int = MAX_REFINE_FACTOR,
) -> TuneReport:
    """Set ``index``'s query knobs to cheap values reaching recall@``k`` >= ``target`` on a held-out sample."""
    knob = index.tunable
    n = len(vectors)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    queries = np.asarray(vectors[rows], dtype=np.float32)
    exclude = [[int(r)] for r in rows]
    truth = ExactIndex(vectors).search(queries, k, exclude).rows
    values, factors = _knob_values(index, knob), _refine_factors(index, max_refine_factor)
    measured: dict[tuple[int, int], float] = {}

    def apply(at: tuple[int, int]) -> None:
        changes: dict[str, int] = {knob: values[at[0]]} if knob else {}
        if factors[at[1]] is not None:
            changes["refine_factor"] = factors[at[1]]
        index.with_params(**changes)

    def recall_of(at: tuple[int, int]) -> float:
        if at not in measured:
            apply(at)
            measured[at] = recall_at_k(truth, index.search(queries, k, exclude).rows)
        return measured[at]

    at = best = (0, 0)
    gains: list[float] = []
    while recall_of(at) < target:
        steps = [s for s in ((at[0] + 1, at[1]), (at[0], at[1] + 1)) if s[0] < len(values) and s[1] < len(factors)]
        if not steps:
            break
        at = max(steps, key=recall_of)  # ties: the probe/efSearch step, listed first
        gains.append(max(0.0, recall_of(at) - recall_of(best)))
        if recall_of(at) > recall_of(best):
            best = at
        if len(gains) >= _PLATEAU_STEPS and sum(gains[-_PLATEAU_STEPS:]) < _PLATEAU_GAIN:
            break
    chosen = at if recall_of(at) >= target else best
    apply(chosen)
    report = TuneReport(
        target,
        recall_of(chosen),
        knob or "none",
        values[chosen[0]],
        factors[chosen[1]],
        len(rows),
        k,
        recall_of(chosen) >= target,
        len(measured),
    )
    index.tuning = report
    return report
