"""Search benchmark, every comparison in one run: exact search (float32, float16, vs the memory-bandwidth floor of
the bytes it reads) and approximate kinds tuned to a recall target (speed-up vs single-query exact, bytes/vector).

Galleries are synthetic but shaped like real CLIP embeddings: unit vectors around a shared mean direction (the
"cone" of CLIP space) in clusters of power-law sizes. On uniform random vectors every ANN's recall is noise.

    nice python bench/search_bench.py --sizes 1000000 --kinds ivfsq ivfpq-fs ivf hnsw --out bench/results/search.md

Run by hand (tens of minutes at 1M on 2 cores: index builds dominate). Prints a Markdown table and writes it to --out.
The recall column is recall@10 of *new* queries (not the tuning sample) against exact search.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from clipmath.search import ExactIndex, FaissIndex, IndexParams, make_index, recall_at_k
from clipmath.search.kinds import kind_spec

#: per kind: (recall target, build/query parameters) used by the benchmark
KIND_SETTINGS = {
    "hnsw": (0.95, dict(hnsw_m=16, ef_construction=64)),
    "ivf": (0.95, dict(nlist=1024, train_size=65_536)),
    "ivfsq": (0.95, dict(train_size=262_144, refine=True, refine_factor=4)),  # nlist: the product default
    "ivfpq": (0.9, dict(nlist=1024, train_size=65_536, pq_m=32, refine=True, refine_factor=8)),
    "ivfpq-fs": (0.9, dict(nlist=1024, train_size=65_536, refine=True, refine_factor=8)),
    "ivfpq-opq": (0.9, dict(nlist=1024, train_size=65_536, pq_m=48, refine=True, refine_factor=8)),
}


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


def best_seconds(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def single_ms(index, queries: np.ndarray, k: int, count: int) -> float:
    """Median milliseconds of one query at a time."""
    times = []
    for query in queries[:count]:
        start = time.perf_counter()
        index.search(query[None], k)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def streaming_read(array: np.ndarray):
    """A read of every byte of ``array`` once (an integer sum, torch's threads): the memory-bandwidth floor."""
    words = torch.from_numpy(array.reshape(-1).view(np.int64))
    return lambda: words.sum()


def single_vs_floor(index, queries: np.ndarray, k: int, floor, rounds: int) -> tuple[float, float, float]:
    """(median ms of one query, median ms of the floor, ratio of the best times), the two interleaved."""
    measured = single_vs_floor_detail(index, queries, k, floor, rounds)
    return measured["search_ms"], measured["floor_ms"], measured["best_ratio"]


def single_vs_floor_detail(index, queries: np.ndarray, k: int, floor, rounds: int) -> dict[str, float]:
    """One query at a time against the floor, interleaved round by round: median ms of each, the ratio of the best
    times, and the ratio of the medians of CPU time (process time: robust to other processes taking the cores)."""
    times: dict[str, list[float]] = {"search": [], "floor": [], "search_cpu": [], "floor_cpu": []}
    for query in queries[:rounds]:
        for name, call in (("floor", floor), ("search", partial(index.search, query[None], k))):
            cpu, start = time.process_time(), time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
            times[f"{name}_cpu"].append(time.process_time() - cpu)
    median = {name: float(np.median(values)) for name, values in times.items()}
    return dict(
        search_ms=1000 * median["search"],
        floor_ms=1000 * median["floor"],
        best_ratio=min(times["search"]) / min(times["floor"]),
        cpu_ratio=median["search_cpu"] / median["floor_cpu"],
    )


class TorchFloat32Scan(ExactIndex):
    """ExactIndex with its float32 blocks scored by torch's GEMM even for one query (the code before the native
    float32 kernel), for a side-by-side row."""

    def _scores(self, query_t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return query_t @ self._gallery_block(start, stop).T


def exact_rows(size: int, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[list[dict], dict[str, float]]:
    """Exact search rows; returns them and the single-query ms of each precision/kernel."""
    rows, singles = [], {}
    half = gallery.astype(np.float16)
    variants = (
        ("float32 (torch GEMM)", gallery, "torch"),
        ("float32 (native kernel, the default)", gallery, "native"),
        ("float16 (torch half GEMV)", half, "torch"),
        ("float16 (inductor fused kernel)", half, "inductor"),
        ("float16 (native fused kernel, the default)", half, "native"),
    )
    for label, vectors, kernel in variants:
        scan = TorchFloat32Scan if vectors.dtype == np.float32 and kernel == "torch" else ExactIndex
        index = scan(vectors, half_kernel=kernel)
        index.max_norm()  # once per index (a store's Retriever pays it at load)
        index.search(queries[:2], k)  # warm-up (compiles the fused kernel once)
        floor = streaming_read(vectors)
        measured = single_vs_floor_detail(index, queries, k, floor, 21)
        single, floor_ms = measured["search_ms"], measured["floor_ms"]
        batch = 1000 * best_seconds(partial(index.search, queries, k), 1) / len(queries)
        singles[label] = single
        rows.append(
            dict(
                size=size,
                method=f"exact {label}, one query at a time",
                ms=single,
                note=f"floor {floor_ms:.1f} ms ({vectors.nbytes / 1e9:.2f} GB read, {torch.get_num_threads()} "
                f"threads), {single / floor_ms:.2f}x floor (medians; {measured['best_ratio']:.2f}x best vs best, "
                f"{measured['cpu_ratio']:.2f}x in CPU time)",
            )
        )
        rows.append(dict(size=size, method=f"exact {label}, batch of {len(queries)}", ms=batch, note=""))
    q = queries[:1]
    before = 1000 * best_seconds(lambda: np.asarray(half, dtype=np.float32) @ q.T, 1)
    best_half = min(v for key, v in singles.items() if key.startswith("float16"))
    rows.append(
        dict(
            size=size,
            method="float16 converted to float32 per call (before)",
            ms=before,
            note=f"{before / best_half:.1f}x slower than exact float16",
        )
    )
    return rows, singles


def ann_rows(size: int, gallery: np.ndarray, queries: np.ndarray, k: int, args, exact: dict[str, float]):
    """Yields the rows of each kind as soon as it is measured."""
    truth = ExactIndex(gallery).search(queries, k).rows
    for kind in args.kinds:
        rows = []
        target, settings = KIND_SETTINGS.get(kind, (0.9, dict(refine=True)) if "PQ" in kind else (0.95, {}))
        params = IndexParams(
            recall=target + args.tune_margin, tune_queries=args.tune_queries, threads=args.build_threads, **settings
        )
        start = time.perf_counter()
        index = make_index(gallery, kind, params)
        build = time.perf_counter() - start
        assert isinstance(index, FaissIndex)
        recall = recall_at_k(truth, index.search(queries, k).rows)
        single = single_ms(index, queries, k, 50)
        batch = 1000 * best_seconds(partial(index.search, queries, k), 1) / len(queries)
        tuning = index.tuning
        factory = kind_spec(kind).faiss_description
        described = factory(size, gallery.shape[1], params) if factory else kind
        rerank = " + re-rank from the gallery" if params.refine else ""
        rows.append(
            dict(
                size=size,
                method=f"{kind} `{described}`{rerank}, one query at a time",
                ms=single,
                recall=recall,
                build=build,
                note=(
                    f"{exact['float32 (native kernel, the default)'] / single:.0f}x faster than exact float32 (native), "
                    f"{exact['float16 (native fused kernel, the default)'] / single:.0f}x than exact float16 (native); "
                    f"tuned {tuning.knob}={tuning.value}"
                    + (f", re-rank x{tuning.refine_factor}" if tuning.refine_factor else "")
                    + f" for {tuning.target:.3f} ({target:.2f} bar + margin), reached {tuning.recall:.3f} on "
                    f"{tuning.sample} held-out "
                    f"({'reached' if tuning.reached else 'NOT reached'}, {tuning.settings_tried} settings tried); "
                    f"{index.bytes_per_vector():.1f} bytes/vector in the index; load {os.getloadavg()[0]:.1f}"
                ),
            )
        )
        rows.append(dict(size=size, method=f"{kind}, batch of {len(queries)}", ms=batch, recall=recall, note=""))
        del index
        yield rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", nargs="*", default=["ivfsq", "ivfpq-fs", "ivf", "hnsw"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for queries and the floor (0: default)")
    parser.add_argument("--build-threads", type=int, default=0, help="FAISS threads for builds (0: default)")
    parser.add_argument("--tune-queries", type=int, default=500, help="held-out gallery vectors used for tuning")
    parser.add_argument("--tune-margin", type=float, default=0.01, help="tune to the recall bar plus this")
    parser.add_argument("--out", type=Path, default=Path("bench/results/search.md"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [
        f"Search benchmark: {args.dim}-d CLIP-like clustered vectors, {args.queries} queries, k={args.k}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()} (FAISS builds {args.build_threads or 'default'}), tuned on {args.tune_queries} "
        f"held-out gallery vectors to the bar + {args.tune_margin}, load average at start {os.getloadavg()[0]:.1f}",
        "",
        "| gallery | method | ms / query | recall@10 vs exact | build (s) | notes |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for size in args.sizes:
        rng = np.random.default_rng(args.seed)
        data = clip_like(size + args.queries, args.dim, rng)
        queries, gallery = data[: args.queries], data[args.queries :]
        rows, exact = exact_rows(size, gallery, queries, args.k)
        _emit(lines, rows, args.out)
        for rows in ann_rows(size, gallery, queries, args.k, args, exact):
            _emit(lines, rows, args.out)
    lines.append(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    _emit(lines, [], args.out)
    print("\n".join(lines))


def _emit(lines: list[str], rows: list[dict], out: Path) -> None:
    """Add rows to the table and rewrite ``out`` (a long run keeps what it measured if stopped)."""
    for row in rows:
        recall = f"{row['recall']:.3f}" if "recall" in row else "1.000"
        build = f"{row['build']:.0f}" if "build" in row else ""
        lines.append(f"| {row['size']:,} | {row['method']} | {row['ms']:.3f} | {recall} | {build} | {row['note']} |")
        print(lines[-1], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
