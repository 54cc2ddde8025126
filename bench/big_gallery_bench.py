"""A gallery larger than comfortable: 10M x 512 float16 CLIP-like vectors (10 GB) built and searched on one machine.

The gallery is generated in chunks straight into a float16 memory-mapped file (the layout of a ``--store-dtype
float16`` store's vector file: raw rows, no header), never held in RAM. Then, in one run, side by side:

* exact search over the memmap (``ExactIndex``: blockwise, float16 scan + exact float32 re-score), one query at a time
  and a batch, against the floors of the bytes it reads: a cold sequential read of the file from disk (its pages
  dropped from the page cache first with ``posix_fadvise``) and a warm read from memory;
* an approximate index that fits in RAM: ``ivfpq`` (IVF, PQ codes of 64 bytes per vector; ``--kind ivfpq-opq`` adds
  an OPQ rotation, whose training is slow on 2 cores) trained on a sample, vectors added in chunks from the memmap,
  candidates re-ranked exactly from the memmapped float16 vectors; a grid of operating points (lists probed x
  candidates re-ranked), each with its recall@10 against exact search on held-out queries and its query time.

Reports per-phase build time, peak resident memory (anonymous, i.e. the process's own, and file-backed, i.e. memmap
pages it touched, sampled every 0.2 s), file sizes, recall@10 against exact search, ms/query and the load average.

    nice python bench/big_gallery_bench.py --size 200000            # dry run (~1 minute)
    OMP_WAIT_POLICY=PASSIVE nohup nice python bench/big_gallery_bench.py --out big.md > big.log &   # 10M, ~11 min

The 10 GB file (and the index) are deleted at the end unless ``--keep``; ``--reuse`` searches what a ``--keep`` run
left (e.g. another grid: ``--nprobe 8 16 --refine 1024 2048``). Results of the runs: bench/results/big_gallery.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from search_bench import clip_like, single_ms, single_vs_floor, streaming_read

from clipmath.search import ExactIndex, FaissIndex, IndexParams, recall_at_k
from clipmath.search.faiss_index import set_threads
from clipmath.search.kinds import kind_spec

CHUNK_ROWS = 250_000


class ConeRng:
    """Stands in for the generator given to :func:`clip_like` so that every chunk shares one CLIP-like "cone".

    ``clip_like`` draws the mean direction and the cluster centres first (two ``standard_normal`` calls), then labels
    and noise. The first two draws come from a generator seeded with ``seed`` alone (identical for every chunk), the
    rest from one seeded with ``(seed, chunk)`` (fresh per chunk): chunks are disjoint samples of one distribution.
    """

    def __init__(self, seed: int, chunk: int) -> None:
        self._cone = np.random.default_rng(seed)
        self._rest = np.random.default_rng([seed, chunk + 1])
        self._draws = 0

    def standard_normal(self, *args, **kwargs):
        self._draws += 1
        return (self._cone if self._draws <= 2 else self._rest).standard_normal(*args, **kwargs)

    def choice(self, *args, **kwargs):
        return self._rest.choice(*args, **kwargs)


def generate(path: Path, size: int, dim: int, seed: int, log) -> np.memmap:
    """Write ``size`` rows of float16 CLIP-like unit vectors to ``path`` (raw rows, like a store's vector file),
    chunk by chunk; returns a read-only map."""
    gallery = np.memmap(path, dtype=np.float16, mode="w+", shape=(size, dim))
    for number, start in enumerate(range(0, size, CHUNK_ROWS)):
        rows = min(CHUNK_ROWS, size - start)
        gallery[start : start + rows] = clip_like(rows, dim, ConeRng(seed, number)).astype(np.float16)
        if number % 8 == 0:
            gallery.flush()
            log(f"generated {start + rows:,} / {size:,} rows")
    gallery.flush()
    del gallery
    return np.memmap(path, dtype=np.float16, mode="r", shape=(size, dim))


def queries_like(count: int, dim: int, seed: int) -> np.ndarray:
    """New queries from the same cone (a chunk number no gallery chunk uses)."""
    return clip_like(count, dim, ConeRng(seed, 10**6))


# ---- measuring -----------------------------------------------------------------------------------------------
def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class MemorySampler:
    """Peak RssAnon / RssFile of this process, sampled every 0.2 s in a thread; ``reset`` starts a new phase."""

    anon_kib: int = 0
    file_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        self.anon_kib = max(self.anon_kib, _status_kib("RssAnon"))
        self.file_kib = max(self.file_kib, _status_kib("RssFile"))

    def reset(self) -> tuple[float, float]:
        """(peak anonymous GB, peak file-backed GB) since the last reset."""
        self.sample()
        peaks = self.anon_kib / 2**20, self.file_kib / 2**20
        self.anon_kib = self.file_kib = 0
        return peaks

    def stop(self) -> None:
        self._stop.set()


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (clean pages of our own file: no root needed)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def cold_read_ms(path: Path) -> float:
    """Sequential read of the whole file from disk, page cache dropped first (the disk floor)."""
    drop_from_page_cache(path)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        buffer = bytearray(64 << 20)
        while fh.readinto(buffer):
            pass
    return 1000 * (time.perf_counter() - start)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def build_ann(gallery: np.ndarray, description: str, args, phases: list, memory: MemorySampler, log):
    """Train the IVF-PQ index on a sample of the memmap, then add the memmap's rows chunk by chunk."""
    import faiss

    log(f"ANN {description}: training on {args.train_size:,} sampled rows")
    t0 = time.perf_counter()
    index = faiss.index_factory(args.dim, description, faiss.METRIC_INNER_PRODUCT)
    # index_factory turns on polysemous training for IVF-PQ: minutes of code-permutation search that only
    # polysemous filtering (never used here) needs
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    rows = np.sort(np.random.default_rng(args.seed).choice(args.size, min(args.size, args.train_size), False))
    index.train(np.asarray(gallery[rows], dtype=np.float32))
    phases.append((f"ANN train `{description}`", time.perf_counter() - t0, load(), memory.reset()))
    t0 = time.perf_counter()
    for start in range(0, args.size, CHUNK_ROWS):
        index.add(np.asarray(gallery[start : start + CHUNK_ROWS], dtype=np.float32))
        if (start // CHUNK_ROWS) % 8 == 0:
            log(f"added {min(args.size, start + CHUNK_ROWS):,} / {args.size:,}")
    phases.append(("ANN add (chunks read from the memmap)", time.perf_counter() - t0, load(), memory.reset()))
    return index


# ---- the run -------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100, help="held-out queries for recall and batch timing")
    parser.add_argument("--single", type=int, default=5, help="queries timed one at a time (exact)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kind", default="ivfpq", help="ivfpq (PQ64x8: 64-byte codes) or ivfpq-opq (slow to train)")
    parser.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers (bytes per code) for ivfpq")
    parser.add_argument("--nlist", type=int, default=512)
    parser.add_argument("--train-size", type=int, default=32_768)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="IVF lists probed (grid)")
    parser.add_argument("--refine", type=int, nargs="+", default=[16, 64, 256, 1024], help="re-rank refine x k (grid)")
    parser.add_argument(
        "--half-kernels", nargs="*", default=["torch", "inductor"], help="more ExactIndex half kernels to time"
    )
    parser.add_argument("--ann-single", type=int, default=20, help="queries timed one at a time per ANN setting")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and FAISS threads (1: no OpenMP spinning on a busy machine)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/clipmath-big"))
    parser.add_argument("--keep", action="store_true", help="keep the generated gallery and index files")
    parser.add_argument("--reuse", action="store_true", help="use the gallery and index a --keep run left in --dir")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown tables here too")
    args = parser.parse_args()

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    set_threads(args.threads)

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s, load {load()}] {message}", flush=True)

    args.dir.mkdir(parents=True, exist_ok=True)
    gallery_path, index_path = args.dir / "gallery.f16", args.dir / f"{args.kind}-{args.nlist}.faiss"
    memory = MemorySampler()
    phases: list[tuple[str, float, str, tuple[float, float]]] = []
    searches: list[tuple[str, float, float | None, str]] = []
    load_start = load()
    try:
        t0 = time.perf_counter()
        if args.reuse and gallery_path.is_file() and gallery_path.stat().st_size == args.size * args.dim * 2:
            gallery = np.memmap(gallery_path, dtype=np.float16, mode="r", shape=(args.size, args.dim))
            log(f"reusing {gallery_path} (kept by an earlier --keep run)")
        else:
            gallery = generate(gallery_path, args.size, args.dim, args.seed, log)
            phases.append(("generate + write float16 memmap", time.perf_counter() - t0, load(), memory.reset()))
        queries = queries_like(args.queries, args.dim, args.seed)
        size_gb = gallery_path.stat().st_size / 1e9
        log(f"gallery file {size_gb:.2f} GB")

        # -- exact over the memmap, with its floors --------------------------------------------------------------
        t0 = time.perf_counter()
        disk_ms = cold_read_ms(gallery_path)
        exact = ExactIndex(gallery, max_norm=1.0)  # unit vectors: the norm pass is not needed
        drop_from_page_cache(gallery_path)  # the cold read filled the cache again
        first_ms = single_ms(exact, queries[:1], args.k, 1)  # cold: pages come from disk as the scan reads them
        log(f"cold disk read {disk_ms:.0f} ms, first (cold) exact query {first_ms:.0f} ms")
        floor = streaming_read(gallery)  # the warm floor: every byte of the memmap read once from the page cache
        single, warm_floor, ratio = single_vs_floor(exact, queries, args.k, floor, args.single)
        log(f"exact single {single:.0f} ms, warm floor {warm_floor:.0f} ms")
        kernels = {}
        for kernel in args.half_kernels:  # other float16 CPU kernels of ExactIndex, same run, same warm cache
            other = ExactIndex(gallery, max_norm=1.0, half_kernel=kernel)
            other.search(queries[-1:], args.k)  # warm-up (the compiled kernel compiles here)
            kernels[kernel] = single_vs_floor(other, queries, args.k, floor, args.single)
            log(f"exact single, half kernel {kernel!r}: {kernels[kernel][0]:.0f} ms")
        t1 = time.perf_counter()
        truth = exact.search(queries, args.k).rows
        batch_ms = 1000 * (time.perf_counter() - t1) / len(queries)
        phases.append(("exact search runs (no build)", time.perf_counter() - t0, load(), memory.reset()))
        read = f"{size_gb:.2f} GB read"
        searches += [
            ("floor: cold sequential read from disk (page cache dropped)", disk_ms, None, read),
            ("floor: warm read from memory (integer sum over the memmap, page cache)", warm_floor, None, read),
            ("exact float16 memmap, first query, cold", first_ms, 1.0, f"{first_ms / disk_ms:.2f}x disk floor"),
            (
                "exact float16 memmap, one query at a time, warm (default kernel)",
                single,
                1.0,
                f"{ratio:.2f}x warm floor",
            ),
            (f"exact float16 memmap, batch of {len(queries)}", batch_ms, 1.0, "per query"),
        ]
        for name, (ms, _, kernel_ratio) in kernels.items():
            row = f"exact float16 memmap, one query at a time, warm, half_kernel={name!r}"
            searches.append((row, ms, 1.0, f"{kernel_ratio:.2f}x warm floor"))

        # -- IVF-PQ (OPQ) in RAM, re-ranked from the memmap ------------------------------------------------------
        import faiss

        pq_m = args.pq_m if args.kind == "ivfpq" else 0
        params = IndexParams(nlist=args.nlist, pq_m=pq_m, train_size=args.train_size, refine=True, refine_factor=8)
        description = kind_spec(args.kind).faiss_description(args.size, args.dim, params)
        if args.reuse and index_path.is_file():
            index = faiss.read_index(str(index_path))
            log(f"reusing {index_path} (kept by an earlier --keep run)")
        else:
            index = build_ann(gallery, description, args, phases, memory, log)
        ann = FaissIndex(index, args.kind, params, gallery)
        ann.save(index_path)
        index_gb = index_path.stat().st_size / 1e9
        # operating points: FAISS returns nprobe lists' best refine x k candidates, re-scored from the memmap
        t0 = time.perf_counter()
        for nprobe in args.nprobe:
            for factor in args.refine:
                ann.with_params(nprobe=nprobe, refine_factor=factor)
                t1 = time.perf_counter()
                recall = recall_at_k(truth, ann.search(queries, args.k).rows)
                batch = 1000 * (time.perf_counter() - t1) / len(queries)
                one = single_ms(ann, queries, args.k, args.ann_single)
                log(f"nprobe {nprobe}, re-rank {factor * args.k}: recall@{args.k} {recall:.3f}, {one:.1f} ms single")
                note = (
                    f"batch of {len(queries)}: {batch:.1f} ms/query; {single / one:.0f}x faster than exact single; "
                    f"{index_gb * 1e9 / max(1, index.ntotal):.0f} B/vector in RAM"
                )
                searches.append((f"`{description}` nprobe {nprobe}, re-rank {factor * args.k}", one, recall, note))
        phases.append(("ANN queries (grid of operating points)", time.perf_counter() - t0, load(), memory.reset()))
        files = {"gallery (float16 memmap)": size_gb, "IVF-PQ index (faiss file)": index_gb}
    finally:
        memory.stop()
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [
        f"Big gallery: {args.size:,} x {args.dim} float16 CLIP-like vectors, k={args.k}, {args.queries} held-out "
        f"queries; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM, torch threads "
        f"{torch.get_num_threads()}; load average (1/5/15 min) at start {load_start}, at end {load()}; "
        f"total {time.perf_counter() - started:.0f} s; peak RSS (getrusage, incl. memmap pages) {peak_gb:.1f} GiB",
        "",
        "| phase | seconds | peak own memory (GiB) | peak memmap pages (GiB) | load after |",
        "| --- | ---: | ---: | ---: | --- |",
        *(f"| {name} | {sec:.0f} | {anon:.2f} | {mapped:.2f} | {ld} |" for name, sec, ld, (anon, mapped) in phases),
        "",
        "| search | ms / query | recall@10 vs exact | notes |",
        "| --- | ---: | ---: | --- |",
        *(f"| {name} | {ms:.1f} | {'' if r is None else f'{r:.3f}'} | {note} |" for name, ms, r, note in searches),
        "",
        "| file | GB |",
        "| --- | ---: |",
        *(f"| {name} | {gb:.2f} |" for name, gb in files.items()),
    ]
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
