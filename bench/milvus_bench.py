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
    started = time.perf_counter()
    sync_store(store, target, SyncConfig(index_type=args.type), progress=True)
    sync_s = time.perf_counter() - started
    # what clipmath sync --recall does on a synced collection: tune the query knob, record it in the collection
    tuned = sync_store(
        store, target, SyncConfig(params=IndexParams(recall=args.recall, tune_queries=200)), progress=False
    )
    tune_s = tuned.seconds
    index = MilvusIndex(target, snapshot.ids, args.dim)  # a searcher: reads the recorded setting
    setting = ", ".join(f"{k}={v}" for k, v in tuned.query.items())
    faiss = make_index(gallery, "ivfsq", IndexParams(recall=args.recall, tune_queries=200))
    client = milvus.connect(target)
    bare_params = search_params(index.index_type, index.params, 10)

    def bare(q):
        return client.search("bench", data=q, limit=10, output_fields=[], search_params=bare_params)

    def bare_rows(q):
        return np.asarray([[snapshot.row_of(hit["id"]) for hit in hits] for hits in bare(q)])

    rows = []
    for label, search, found in (
        (f"Milvus Lite {args.type} via clipmath ({setting})", lambda q: index.search(q, 10), None),
        (f"Milvus Lite {args.type}, bare pymilvus ({setting})", bare, bare_rows),
        (f"FAISS ivfsq in-process ({faiss.tuning.knob}={faiss.tuning.value})", lambda q: faiss.search(q, 10), None),
    ):
        search(queries[:5])
        ms = latencies(search, queries)
        got = found(queries) if found else search(queries).rows
        rows.append(
            (label, f"{recall_at_k(truth, got):.3f}", 1000 / ms.mean(), np.percentile(ms, 50), np.percentile(ms, 99))
        )
    overhead = rows[0][3] / rows[1][3]
    lines = [
        f"{args.n:,} x {args.dim} synthetic CLIP-like vectors (bench/search_bench.py clip_like); sync to Milvus Lite "
        f"({args.type} {tuned.index_params}) {sync_s:.1f} s, then tuning to recall@10 {args.recall} on 200 held-out "
        f"gallery vectors {tune_s:.1f} s (clipmath sync --recall: {tuned.tuning['recall']:.3f}); {args.queries} new "
        "single queries (not in the gallery), one at a time; recall@10 against exact search",
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
