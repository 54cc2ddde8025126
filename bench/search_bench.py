"""Search benchmark: exact (clipmath) vs a bare NumPy matmul, and FAISS HNSW / IVF-PQ speed and recall@10.

Galleries are synthetic but shaped like real CLIP embeddings: unit vectors around a shared mean direction (the
"cone" of CLIP space) in clusters of power-law sizes. On uniform random vectors every ANN's recall is noise.

    python bench/search_bench.py --sizes 100000 1000000 --out bench/results/search.md

Run by hand (minutes at 1M: HNSW construction dominates). Prints a Markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from clipmath.search import ExactIndex, FaissIndex, FaissParams
from clipmath.search.faiss_index import factory_string


def clip_like(n: int, dim: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    """Unit vectors: shared mean direction + power-law-sized clusters + per-item noise (float32).

    Tuned to CLIP ViT-B/32 image statistics: mean pairwise cosine ~0.5, same-cluster cosine ~0.8.
    """
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) / np.sqrt(dim)
        block = 0.7 * mean + 0.55 * centres[labels[start:stop]] + 0.45 * noise
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def per_query_ms(fn, queries: np.ndarray, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(queries)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(queries)


def numpy_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ gallery.T
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def recall_at(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found)]))


def run(size: int, dim: int, n_queries: int, k: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    gallery = clip_like(size + n_queries, dim, rng)
    queries, gallery = gallery[:n_queries], gallery[n_queries:]
    rows = []
    exact = ExactIndex(gallery)
    truth = exact.search(queries, k).rows
    rows.append(
        {
            "method": "numpy matmul + argpartition (batch)",
            "ms": per_query_ms(lambda q: numpy_topk(gallery, q, k), queries),
            "recall": recall_at(truth, numpy_topk(gallery, queries, k)),
            "build_s": 0.0,
        }
    )
    rows.append(
        {
            "method": "clipmath exact (batch)",
            "ms": per_query_ms(lambda q: exact.search(q, k), queries),
            "recall": 1.0,
            "build_s": 0.0,
        }
    )
    rows.append(
        {
            "method": "clipmath exact (one query at a time)",
            "ms": per_query_ms(lambda q: [exact.search(x[None], k) for x in q[:20]], queries[:20], 1),
            "recall": 1.0,
            "build_s": 0.0,
        }
    )
    for kind, params in [
        ("hnsw", FaissParams(ef_search=128)),
        ("ivfpq", FaissParams(nprobe=32)),
        ("ivfpq", FaissParams(nprobe=32, refine=True)),
    ]:
        start = time.perf_counter()
        index = FaissIndex.build(gallery, kind, params)
        build = time.perf_counter() - start
        found = index.search(queries, k).rows
        label = {
            "hnsw": f"FAISS HNSW{params.hnsw_m} efSearch={params.ef_search}",
            "ivfpq": f"FAISS {factory_string(kind, size, dim, params)} nprobe={params.nprobe}",
        }[kind]
        rows.append(
            {
                "method": label + " (batch)",
                "ms": per_query_ms(lambda q: index.search(q, k), queries),
                "recall": recall_at(truth, found),
                "build_s": build,
            }
        )
    for row in rows:
        row["size"] = size
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/search.md"))
    args = parser.parse_args()
    lines = [
        f"Search benchmark: {args.dim}-d CLIP-like clustered vectors, {args.queries} queries, k={args.k}, "
        f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "",
        "| gallery | method | ms / query | recall@10 vs exact | build (s) |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for size in args.sizes:
        for row in run(size, args.dim, args.queries, args.k, args.seed):
            lines.append(
                f"| {row['size']:,} | {row['method']} | {row['ms']:.3f} | {row['recall']:.3f} | {row['build_s']:.1f} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
