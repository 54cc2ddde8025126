"""Indexing speed: the whole ``clipmath index`` command against the bare decode+encode loop, side by side.

    nice python bench/index_bench.py [--photos 600] [--model offline-imagenet-minilm] [--batch-size 32]

Writes ``--photos`` JPEGs made from the repository's example photos (random flips, crops and scales, long side
640–2048 px, like phone and web photos) into a temporary folder, then measures in one run:

* **bare loop**: in this process, model already loaded: decode each file (``clipmath.imageio``), then
  ``encode_images`` per batch; no hashing, no store. The reference a whole command is compared with.
* **index command**: ``python -m clipmath index`` in a fresh process: start-up, imports, model load, scan, hashing,
  decode, encode, store writes. Ratio = bare loop time / command time (target ≥ 0.9).
* **no-change re-run** of the same command, and ``clipmath info`` on the same store (target ≤ 2×).
* ``encode_files`` with ``workers=0`` (in-process) and all cores, and model-only / decode-only throughput.

Run it under ``nice`` on a shared machine; timings move with the machine's load, ratios less so.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "examples" / "gallery"


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs derived from the example photos: flipped, cropped, scaled to a long side of 640–2048 px."""
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(GALLERY.rglob("*")) if p.suffix.lower() in (".jpg", ".png")]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = sources[i % len(sources)]
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        width, height = image.size
        keep = rng.uniform(0.7, 1.0)
        w, h = int(width * keep), int(height * keep)
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        image = image.crop((left, top, left + w, top + h))
        long_side = rng.randint(640, 2048)
        scale = long_side / max(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        path = folder / f"{i // 100:02d}" / f"photo_{i:04d}.jpg"
        path.parent.mkdir(exist_ok=True)
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def run_command(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clipmath", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"clipmath {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds


def bare_loop(encoder, paths: list[Path], batch_size: int) -> float:
    from clipmath.imageio import decode_image

    started = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        images = [decode_image(p) for p in paths[start : start + batch_size]]
        encoder.encode_images(images, batch_size=batch_size)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--model", default="offline-imagenet-minilm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (and image workers) on both sides")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="clipmath-index-bench-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        started = time.perf_counter()
        paths = make_photos(work / "photos", args.photos)
        print(f"made {len(paths)} photos in {time.perf_counter() - started:.1f} s under {work}", flush=True)

        from clipmath.encoders import load_encoder
        from clipmath.encoders.pipeline import available_cores

        encoder = load_encoder(args.model)
        threads = ["--threads", str(args.threads)] if args.threads else []
        encoder.set_threads(args.threads or None)
        import torch

        print(f"model: {encoder.info.label()}; cores: {available_cores()}; torch threads: {torch.get_num_threads()}")
        encoder.encode_images([__import__("PIL.Image").Image.new("RGB", (64, 64))] * 2)  # warm-up

        rows = []
        bare = bare_loop(encoder, paths, args.batch_size)
        rows.append(("bare decode+encode loop (model loaded, 1 process)", bare, len(paths) / bare))
        store = work / "store"
        index_args = ["index", str(work / "photos"), "--store", str(store), "--model", args.model, "--json"]
        index_args += ["--batch-size", str(args.batch_size), *threads]
        whole = run_command(index_args, env)
        rows.append(("`clipmath index` whole command (fresh process)", whole, len(paths) / whole))
        again = run_command(index_args, env)
        rows.append(("`clipmath index` again, nothing changed", again, None))
        info = run_command(["info", str(store), "--json"], env)
        rows.append(("`clipmath info` on the same store", info, None))

        for workers, label in ((0, "0 (in-process)"), (available_cores(), f"{available_cores()} (all cores)")):
            started = time.perf_counter()
            encoder.encode_files(paths, batch_size=args.batch_size, workers=workers)
            seconds = time.perf_counter() - started
            rows.append((f"encode_files, workers = {label}", seconds, len(paths) / seconds))
        rows.extend(_component_rows(encoder, paths, args.batch_size))

        print()
        print("| measurement | seconds | images/s |")
        print("| --- | ---: | ---: |")
        for name, seconds, rate in rows:
            print(f"| {name} | {seconds:.2f} | {'' if rate is None else f'{rate:.1f}'} |")
        print()
        print(f"index command / bare loop throughput: {bare / whole:.2f} (target ≥ 0.9)")
        print(f"no-change re-run / info: {again / info:.2f}× (target ≤ 2×)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _component_rows(encoder, paths: list[Path], batch_size: int) -> list[tuple[str, float, float]]:
    """Model alone (prepared pixels in) and decode+prepare alone on all cores (no model)."""
    import numpy as np
    import torch

    from clipmath.encoders.pipeline import ImagePipeline

    spec = encoder.pipeline_spec()
    started = time.perf_counter()
    prepared = [b.pixels for b in ImagePipeline(spec).batches(paths, batch_size)]
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    with torch.no_grad():
        for pixels in prepared:
            encoder.image_features(encoder.pixels_from_uint8(np.ascontiguousarray(pixels)))
    model_s = time.perf_counter() - started
    return [
        ("decode + resize + crop only, all cores (no model)", decode_s, len(paths) / decode_s),
        ("model only (prepared pixels in)", model_s, len(paths) / model_s),
    ]


if __name__ == "__main__":
    main()
