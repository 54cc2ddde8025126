"""Tune an approximate index until it reaches a recall target, measured on a held-out sample of its own gallery.

Sample rows of the gallery are used as queries with themselves excluded (so a row never finds itself), exact search
gives their true top-k, and the index's query knob (HNSW ``efSearch``, IVF ``nprobe``; then the re-rank factor) is
raised step by step until recall@k on the sample reaches the target. The smallest setting that does is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipmath.search.exact import ExactIndex
from clipmath.search.faiss_index import FaissIndex


@dataclass(frozen=True)
class TuneReport:
    """What tuning chose and the recall it measured (``reached`` False: the target was not met at the largest)."""

    target: float
    recall: float
    knob: str
    value: int
    refine_factor: int | None
    sample: int
    k: int
    reached: bool

    def describe(self) -> str:
        refine = f", re-rank x{self.refine_factor}" if self.refine_factor else ""
        verdict = "reached" if self.reached else "NOT reached (largest setting tried)"
        return (
            f"recall@{self.k} {self.recall:.3f} on {self.sample} held-out gallery vectors with {self.knob}="
            f"{self.value}{refine} (target {self.target:.2f} {verdict})"
        )


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (valid rows >= 0) found in the same row of ``found``."""
    hits = [len(set(t[t >= 0].tolist()) & set(f.tolist())) / max(1, int((t >= 0).sum())) for t, f in zip(truth, found)]
    return float(np.mean(hits)) if hits else 1.0


def _knob_values(index: FaissIndex, knob: str) -> list[int]:
    if knob == "nprobe":
        import faiss

        nlist = faiss.extract_index_ivf(index.index).nlist
        values = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048) if v < nlist]
        return values + [nlist]
    return [16, 32, 64, 128, 256, 512, 1024, 2048]


def tune_recall(
    index: FaissIndex, vectors: np.ndarray, target: float, k: int = 10, sample: int = 500, seed: int = 0
) -> TuneReport:
    """Set ``index``'s query knobs to the cheapest values reaching recall@``k`` >= ``target`` on a held-out sample."""
    knob = index.tunable
    n = len(vectors)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    queries = np.asarray(vectors[rows], dtype=np.float32)
    exclude = [[int(r)] for r in rows]
    truth = ExactIndex(vectors).search(queries, k, exclude).rows
    factors = [index.params.refine_factor * 2**i for i in range(4)] if index.params.refine else [None]
    best: TuneReport | None = None
    for factor in factors:
        for value in _knob_values(index, knob) if knob else [0]:
            changes = {knob: value} if knob else {}
            if factor is not None:
                changes["refine_factor"] = factor
            index.with_params(**changes)
            recall = recall_at_k(truth, index.search(queries, k, exclude).rows)
            report = TuneReport(target, recall, knob or "none", value, factor, len(rows), k, recall >= target)
            if best is None or recall > best.recall:
                best = report
            if report.reached:
                index.tuning = report
                return report
    assert best is not None
    changes = {knob: best.value} if knob else {}
    if best.refine_factor is not None:
        changes["refine_factor"] = best.refine_factor
    index.with_params(**changes)
    index.tuning = best
    return best
