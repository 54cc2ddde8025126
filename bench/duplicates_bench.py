"""Duplicates on generated vectors with planted near-duplicate pairs: precision, recall and time.

PYTHONPATH=src python bench/duplicates_bench.py --rows 100000 --dim 512 --pairs 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clipmath.store.duplicates import duplicate_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--kind", default=None, help="index kind (default: exact up to 50k rows, else hnsw)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    copies = rng.choice(args.rows, size=2 * args.pairs, replace=False).reshape(-1, 2)
    noise = rng.standard_normal((args.pairs, args.dim), dtype=np.float32) * 0.2  # cosine about 0.98
    vectors[copies[:, 1]] = vectors[copies[:, 0]] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = {(min(a, b), max(a, b)) for a, b in copies.tolist()}
    started = time.perf_counter()
    found = {(a, b) for a, b, _ in duplicate_pairs(vectors, args.threshold, kind=args.kind)}
    seconds = time.perf_counter() - started
    hits = len(found & truth)
    print(f"| {args.rows:,} × {args.dim} | {args.pairs:,} | {args.threshold} | "
          f"{hits / max(1, len(found)):.4f} | {hits / len(truth):.4f} | {seconds:.1f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
