"""Import of a LAION-style embeddings folder (``img_emb/img_emb_{N}.npy``, float16) as a clipmath store: time and
resident memory, with and without the per-shard checksum; then opening it and one exact single-query search.

The folder is generated (random unit vectors, float16, written shard by shard through a memmap: never in RAM). Each
measured step runs in its own process, which reports its wall time and peak resident memory (``VmHWM``: not
``ru_maxrss``, which a child inherits from its parent's peak across fork and exec), so one step's memory is not
another's; after the search, the resident memory is split into the process's own (anonymous) and mapped file pages. The files are in the page cache after being written (a warm import: the cold one
reads the same bytes from disk once for the checksum and not at all without it).

    python bench/laion_bench.py --rows 1000000 --dim 768 --shards 100      # ~1.5 GB, a few minutes on 2 cores
    python bench/laion_bench.py --rows 200000 --shards 1                    # one shard: searched in place

The folder and stores are deleted at the end unless ``--keep``. No model runs: the store is recorded as made by a
stand-in 768-d identity (``bench-768``), so the numbers are I/O and bookkeeping only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK_ROWS = 50_000

_IMPORT = """
import json, sys, time
from clipmath.encoders.identity import EncoderInfo
from clipmath.store.external import ImportConfig, import_embeddings
folder, store, checksum, dim = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
info = EncoderInfo(model_id=f"bench-{dim}", backend="bench", dim=dim, pretrained=False)
started = time.perf_counter()
report = import_embeddings(folder, store, info, "clip", ImportConfig(checksum=checksum), progress=False)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({"seconds": time.perf_counter() - started, "rows": report.rows,
                  "rss_mb": int(status["VmHWM"].split()[0]) / 1024}))
"""

_SEARCH = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from search_bench import single_vs_floor_detail, streaming_read
from clipmath.search import ExactIndex
from clipmath.store import Gallery
started = time.perf_counter()
snapshot = Gallery.open(sys.argv[1]).snapshot()
opened = time.perf_counter() - started
index = ExactIndex(snapshot.vectors)
rng = np.random.default_rng(0)
queries = rng.standard_normal((12, snapshot.vectors.shape[1])).astype(np.float32)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
t = time.perf_counter()
index.search(queries[:1], 10)  # the first query: kernel set-up, pages mapped
first = time.perf_counter() - t
measured = single_vs_floor_detail(index, queries[1:], 10, streaming_read(np.asarray(snapshot.vectors)), 11)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
mb = lambda key: int(status[key].split()[0]) / 1024
print(json.dumps({"open_seconds": opened, "ids": len(snapshot.ids), "memmap": isinstance(snapshot.vectors, np.memmap),
                  "first_ms": first * 1000, **measured, "rss_mb": mb("VmHWM"), "anon_mb": mb("RssAnon"),
                  "file_mb": mb("RssFile")}))
"""


def generate(folder: Path, rows: int, dim: int, shards: int, seed: int = 0) -> int:
    """Write ``shards`` npy files of float16 unit vectors (``rows`` in all); returns the bytes written."""
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = [rows // shards + (1 if n < rows % shards else 0) for n in range(shards)]
    written = 0
    width = len(str(shards - 1))
    for number, count in enumerate(per):
        path = folder / "img_emb" / f"img_emb_{number:0{width}d}.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, dim))
        for start in range(0, count, BLOCK_ROWS):
            block = rng.standard_normal((min(BLOCK_ROWS, count - start), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            array[start : start + len(block)] = block
        array.flush()
        del array
        written += path.stat().st_size
    return written


def run(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="Work folder (default: a new temporary one).")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="laion_bench_"))
    folder = work / "emb"
    try:
        started = time.perf_counter()
        size = generate(folder, args.rows, args.dim, args.shards)
        print(f"generated {args.rows:,} x {args.dim} float16 in {args.shards} shards: {size / 1e9:.2f} GB "
              f"in {time.perf_counter() - started:.0f} s ({work})")  # fmt: skip
        rows = []
        for checksum in (False, True):
            store = work / f"store-{int(checksum)}"
            shutil.rmtree(store, ignore_errors=True)
            imported = run(_IMPORT, str(folder), str(store), "1" if checksum else "0", str(args.dim))
            manifest = (store / "manifest.sqlite").stat().st_size
            rows.append(("import, checksum " + ("on" if checksum else "off"), f"{imported['seconds']:.1f} s",
                         f"{imported['rss_mb']:.0f} MB", f"manifest {manifest / 1e6:.0f} MB"))  # fmt: skip
        searched = run(_SEARCH, str(work / "store-0"), str(Path(__file__).resolve().parent))
        mapped = "memory-mapped in place" if searched["memmap"] else "shards gathered into RAM"
        rows.append(("open (ids + vectors) + search", f"{searched['open_seconds']:.1f} s (open)",
                     f"{searched['rss_mb']:.0f} MB", f"{mapped}; after: {searched['anon_mb']:.0f} MB own + "
                     f"{searched['file_mb']:.0f} MB mapped file pages"))  # fmt: skip
        rows.append(("exact search, 1 query, k=10", f"{searched['search_ms']:.1f} ms (median of 11)", "",
                     f"floor (one read of the vectors) {searched['floor_ms']:.1f} ms; best-time ratio "
                     f"{searched['best_ratio']:.2f}, CPU-time ratio {searched['cpu_ratio']:.2f}; "
                     f"first query {searched['first_ms']:.0f} ms"))  # fmt: skip
        print(f"\n| step ({args.rows:,} x {args.dim} float16, {args.shards} shards, {size / 1e9:.2f} GB) "
              "| time | peak RSS | note |")  # fmt: skip
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
