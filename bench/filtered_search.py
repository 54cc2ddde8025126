"""Filtered exact search vs unfiltered (same run): N random unit vectors, a folder filter keeping 1%.

    PYTHONPATH=src python bench/filtered_search.py --rows 200000 --dim 512

Prints medians of 5 runs: unfiltered top-10, filtered top-10 (mask + scoring), and the mask alone."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from clipmath.search import make_index
from clipmath.store.controls import MetaColumns, QueryControls, controlled_search
from clipmath.store.photometa import PhotoMeta


def median_seconds(run, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"f{i % 100}/{i}.jpg" for i in range(args.rows)]
    metas = {i: PhotoMeta(i, i.split("/")[0], "2020-01-01T00:00:00", "exif", None, 640, 480, None, 1) for i in ids}
    query = vectors[0] + 0.1
    query /= np.linalg.norm(query)
    index = make_index(vectors)
    controls = QueryControls(folder="f7")
    plain = median_seconds(lambda: index.search(query[None], 10))
    columns = MetaColumns.of(ids, metas)  # once per committed state, as the Retriever does
    filtered = median_seconds(
        lambda: controlled_search(index, ids, query, 10, controls, metas, [], False, columns=columns)
    )
    mask = median_seconds(lambda: controls.mask(ids, metas, columns))
    print(f"rows={args.rows} dim={args.dim} filter keeps 1%")
    print("| unfiltered exact top-10 | filtered top-10 (total) | of which the mask |")
    print(f"| {plain * 1000:.1f} ms | {filtered * 1000:.1f} ms | {mask * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
