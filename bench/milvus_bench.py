"""Milvus Lite beside in-process FAISS ivfsq at the same recall target, one run: sync time, queries/s and p50/p99
latency of single queries, recall@10 of new queries, and clipmath's overhead over a bare pymilvus search.

    nice python bench/milvus_bench.py --n 1000000 --out bench/results/milvus.md

Galleries are synthetic CLIP-like vectors (bench/search_bench.py's ``clip_like``), written to a store first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search_bench import clip_like  # noqa: E402

from clipmath.encoders import EncoderInfo  # noqa: E402
from clipmath.search import ExactIndex, IndexParams, make_index, milvus, recall_at_k  # noqa: E402
from clipmath.search.milvus import MilvusIndex, MilvusTarget, search_params  # noqa: E402
from clipmath.search.tuning import tune_recall  # noqa: E402
from clipmath.store import Gallery, ItemRecord  # noqa: E402
from clipmath.store.sync import SyncConfig, sync_store  # noqa: E402


def latencies(search, queries: np.ndarray) -> np.ndarray:
    out = []
    for query in queries:
        start = time.perf_counter()
        search(query[None])
        out.append(time.perf_counter() - start)
    return 1000 * np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall", type=float, default=0.95)
    parser.add_argument("--type", default="IVF_SQ8")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = clip_like(args.n + args.queries, args.dim, rng)
    gallery, queries = data[: args.n], data[args.n :]
    truth = ExactIndex(gallery).search(queries, 10).rows
    tmp = Path(tempfile.mkdtemp(prefix="milvus-bench-"))
    store = tmp / "bench.store"
    info = EncoderInfo("bench-synthetic", "synthetic", args.dim, False)
    with Gallery.open_for_writing(store, info, "clip", tmp) as writer:
        for start in range(0, args.n, 100_000):
            stop = min(args.n, start + 100_000)
            items = [ItemRecord(f"{i % 1000}/{i}.jpg", f"{i:064x}", 1, 1) for i in range(start, stop)]
            writer.commit(items, gallery[start:stop])
    snapshot = Gallery.open(store).snapshot()
    target = MilvusTarget.parse(f"milvus:{tmp / 'bench.db'}#bench", timeout=600)
    params = IndexParams(recall=args.recall, tune_queries=200)
    started = time.perf_counter()
    sync_store(store, target, SyncConfig(index_type=args.type, params=IndexParams()), progress=True)
    sync_s = time.perf_counter() - started
    index = MilvusIndex(target, snapshot.ids, args.dim, params)
    tuned = tune_recall(index, snapshot.vectors, args.recall, sample=200)
    faiss = make_index(gallery, "ivfsq", IndexParams(recall=args.recall, tune_queries=200))
    rows = []
    client = milvus.connect(target)
    bare_params = search_params(index.index_type, index.params, 10)

    def bare(q):
        return client.search("bench", data=q, limit=10, output_fields=[], search_params=bare_params)

    for label, search in (
        (f"Milvus Lite {args.type} via clipmath ({tuned.knob}={tuned.value})", lambda q: index.search(q, 10)),
        (f"Milvus Lite {args.type}, bare pymilvus", bare),
        (f"FAISS ivfsq in-process ({faiss.tuning.knob}={faiss.tuning.value})", lambda q: faiss.search(q, 10)),
    ):
        search(queries[:5])
        ms = latencies(search, queries)
        found = (
            index.search(queries, 10).rows
            if "clipmath" in label
            else faiss.search(queries, 10).rows
            if "FAISS" in label
            else None
        )
        recall = f"{recall_at_k(truth, found):.3f}" if found is not None else "(same as above)"
        rows.append((label, recall, 1000 / ms.mean(), np.percentile(ms, 50), np.percentile(ms, 99)))
    overhead = rows[0][3] / rows[1][3]
    lines = [
        f"{args.n:,} x {args.dim} synthetic CLIP-like vectors; sync to Milvus Lite ({args.type}) {sync_s:.1f} s; "
        f"{args.queries} new single queries; recall target {args.recall}",
        "",
        "| index | recall@10 | q/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.2f} | {r[4]:.2f} |" for r in rows),
        "",
        f"clipmath over bare pymilvus (p50): {overhead:.2f}x",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    milvus.close_all()


if __name__ == "__main__":
    main()
