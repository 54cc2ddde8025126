"""Duplicates on generated vectors with planted near-duplicate pairs: precision, recall and time of clipmath's
self-join, beside (``--baseline``) the k-nearest-neighbour self-join through an HNSW graph it replaced.

PYTHONPATH=src python bench/duplicates_bench.py --rows 100000 --dim 512 --pairs 1000 --baseline
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clipmath.search import make_index
from clipmath.store.duplicates import DuplicateSearch, duplicate_pairs


def knn_self_join(vectors: np.ndarray, threshold: float, neighbours: int = 8) -> set[tuple[int, int]]:
    """The earlier method: each row's ``neighbours`` nearest rows from an HNSW graph, kept at or above threshold."""
    index = make_index(vectors, "hnsw")
    pairs = set()
    for start in range(0, len(vectors), 4096):
        found = index.search(vectors[start : start + 4096], neighbours + 1)
        for row, (rows, scores) in enumerate(zip(found.rows, found.scores), start):
            pairs |= {(min(row, o), max(row, o)) for o, s in zip(rows.tolist(), scores.tolist()) if o not in (-1, row)
                      and s >= threshold}  # fmt: skip
    return pairs


def report(label: str, rows: int, dim: int, found: set, truth: set, threshold: float, seconds: float) -> None:
    hits = len(found & truth)
    print(f"| {label} | {rows:,} × {dim} | {len(truth):,} | {threshold} | "
          f"{hits / max(1, len(found)):.4f} | {hits / len(truth):.4f} | {seconds:.1f} s |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--probes", type=int, default=DuplicateSearch.probes, help="clusters per row (clustered join)")
    parser.add_argument("--baseline", action="store_true", help="also time the HNSW k-NN self-join, same vectors")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    copies = rng.choice(args.rows, size=2 * args.pairs, replace=False).reshape(-1, 2)
    noise = rng.standard_normal((args.pairs, args.dim), dtype=np.float32) * 0.2  # cosine about 0.98
    vectors[copies[:, 1]] = vectors[copies[:, 0]] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = {(min(a, b), max(a, b)) for a, b in copies.tolist()}
    print("| method | rows × dim | planted pairs | threshold | precision | recall | time |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    started = time.perf_counter()
    found = {(a, b) for a, b, _ in duplicate_pairs(vectors, DuplicateSearch(args.threshold, args.probes))}
    label = f"clipmath join ({'exact' if args.rows <= 20_000 else f'clustered, {args.probes} probes'})"
    report(label, args.rows, args.dim, found, truth, args.threshold, time.perf_counter() - started)
    if args.baseline:
        started = time.perf_counter()
        found = knn_self_join(vectors, args.threshold)
        report("HNSW 8-NN self-join", args.rows, args.dim, found, truth, args.threshold, time.perf_counter() - started)


if __name__ == "__main__":
    main()
