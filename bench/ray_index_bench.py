"""Ray indexing throughput with 1 and 2 actors against the local indexer, in one run, on generated photos.

    nice python bench/ray_index_bench.py --images 300 --model tiny-random-clip --out bench/results/ray_index.md

Each engine indexes the same folder into a fresh store; the Ray runs use a local cluster started here (CPU actors,
no dashboard). The model is named in the output: a random model's numbers measure the pipeline, not quality.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clipmath.encoders import load_encoder
from clipmath.store import IndexConfig, index_folder
from clipmath.store.ray_engine import RayOptions, index_with_ray, require_ray


def write_photos(folder: Path, count: int, size: tuple[int, int] = (640, 480)) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    base = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype(np.uint8)
    for i in range(count):
        pixels = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))  # smooth-ish, JPEG-sized
        Image.fromarray(pixels).save(folder / f"photo_{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--model", default="tiny-random-clip")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ray_index.md"))
    args = parser.parse_args()
    ray = require_ray()
    config = IndexConfig(batch_size=args.batch_size, commit_every=128)
    encoder = load_encoder(args.model)
    factory = functools.partial(load_encoder, args.model)
    lines = [
        f"Indexing {args.images} generated 640x480 JPEGs, model {encoder.info.label()}, {os.cpu_count()} cores, "
        f"load average at start {os.getloadavg()[0]:.1f}",
        "",
        "| engine | images/s | seconds | vs local |",
        "| --- | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        write_photos(folder, args.images)
        start = time.perf_counter()
        index_folder(Path(tmp) / "local.store", folder, encoder, config, progress=False)
        local = time.perf_counter() - start
        lines.append(f"| local indexer | {args.images / local:.1f} | {local:.1f} | 1.00 |")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                start = time.perf_counter()
                options = RayOptions(workers=workers)
                store = Path(tmp) / f"ray{workers}.store"
                index_with_ray(store, folder, factory, config, options=options, encoder=encoder, progress=False)
                took = time.perf_counter() - start
                lines.append(f"| ray, {workers} actor(s) | {args.images / took:.1f} | {took:.1f} | {local / took:.2f} |")
                print(lines[-1], flush=True)
        finally:
            ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
