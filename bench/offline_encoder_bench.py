"""Time the offline-imagenet-minilm encoder: load time, images/s and texts/s on this machine.

    python bench/offline_encoder_bench.py [--images 64] [--batch-size 32] [--threads N]

Uses the repository's example photos (examples/gallery), repeated to ``--images``. The first load in a fresh cache
also encodes the 1000 class prompts; run twice to see both numbers (the output says which happened).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

GALLERY = Path(__file__).resolve().parents[1] / "examples" / "gallery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from clipmath.encoders import offline
    from clipmath.encoders.offline import OfflineImageNetMiniLM, class_table_path

    text_folder = offline._package_folder(*offline.TEXT_PACKAGE) / "model"
    cached = class_table_path(text_folder).exists()
    start = time.perf_counter()
    encoder = OfflineImageNetMiniLM.load()
    load_s = time.perf_counter() - start
    print(f"model: {encoder.info.label()}")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"load: {load_s:.2f} s ({'class table read from cache' if cached else 'class table built and cached'})")

    paths = sorted(p for p in GALLERY.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    photos = [Image.open(p).convert("RGB") for p in paths]
    images = [photos[i % len(photos)] for i in range(args.images)]
    encoder.encode_images(images[: args.batch_size], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    encoder.encode_images(images, batch_size=args.batch_size)
    image_s = time.perf_counter() - start
    print(
        f"encode_images: {len(images) / image_s:.1f} images/s ({len(images)} images, batch {args.batch_size}, "
        "decoded PIL in, preprocessing included)"
    )

    texts = [f"a photo of a {name}" for name in encoder.class_names[:256]]
    start = time.perf_counter()
    encoder.encode_texts(texts)
    text_s = time.perf_counter() - start
    print(f"encode_texts: {len(texts) / text_s:.1f} texts/s")


if __name__ == "__main__":
    main()
