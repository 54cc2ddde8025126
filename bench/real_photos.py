"""What the offline pretrained model does on real photos (the ones shipped in examples/).

1. caption -> image retrieval: each of the 110 human COCO captions in examples/captions.json searches the 22 COCO
   photos (and, harder, the whole 32-photo example gallery); Recall@1/5.
2. delta arithmetic: a cat photo with "a photo of a cat" -> "a photo of a {X}" should move photos of X up the
   ranking. Reports the best rank of an X photo with the image alone vs. with the delta (λ = 1).

    python bench/real_photos.py [--model offline-imagenet-minilm] [--out bench/results/real_photos.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clipmath.compose import CompositionQuery, get_composer
from clipmath.encoders import load_encoder
from clipmath.search import ExactIndex
from clipmath.store import decode_image, list_images

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CATS = ["skimage/chelsea.png", "coco/COCO_val2014_000000577526.jpg", "coco/COCO_val2014_000000406395.jpg"]
#: target word -> gallery photos that show it (from the human captions / the scikit-image docs)
TARGETS = {
    "pizza": ["coco/COCO_val2014_000000557731.jpg", "coco/COCO_val2014_000000207151.jpg"],
    "elephant": ["coco/COCO_val2014_000000562207.jpg"],
    "giraffe": ["coco/COCO_val2014_000000027440.jpg"],
    "cup of coffee": ["skimage/coffee.png"],
    "motorcycle": ["coco/COCO_val2014_000000354533.jpg"],
    "rocket": ["skimage/rocket.jpg"],
}


def recall(ranked: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([t in row[:k] for row, t in zip(ranked, truth)]))


def caption_retrieval(encoder, ids: list[str], vectors: np.ndarray, captions: dict) -> dict[str, float]:
    texts, truth = [], []
    for name, entry in captions.items():
        for caption in entry["captions"]:
            texts.append(caption)
            truth.append(ids.index(f"coco/{name}"))
    ranked = ExactIndex(vectors).search(encoder.encode_texts(texts), 10).rows
    return {"queries": len(texts), "R@1": recall(ranked, np.array(truth), 1), "R@5": recall(ranked, np.array(truth), 5)}


def delta_moves(encoder, ids: list[str], vectors: np.ndarray, lam: float = 1.0) -> list[dict]:
    index = ExactIndex(vectors)
    rows = []
    for cat in CATS:
        reference = vectors[ids.index(cat)]
        for word, photos in TARGETS.items():
            query = CompositionQuery(
                reference=reference, source="a photo of a cat", target=f"a photo of a {word}", lam=lam
            )
            results = {}
            for method in ("image", "delta"):
                vector = get_composer(method).compose(encoder, [query])
                ranked = index.search(vector, len(ids), [[ids.index(cat)]]).rows[0].tolist()
                results[method] = min(ranked.index(ids.index(p)) for p in photos) + 1
            rows.append(
                {"reference": cat, "target": word, "rank_image_only": results["image"], "rank_delta": results["delta"]}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline-imagenet-minilm")
    parser.add_argument("--out", type=Path, default=Path("bench/results/real_photos.md"))
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    captions = json.loads((EXAMPLES / "captions.json").read_text())
    ids = list_images(EXAMPLES / "gallery")
    vectors = encoder.encode_images([decode_image(EXAMPLES / "gallery" / i) for i in ids])
    coco = [i for i in ids if i.startswith("coco/")]
    coco_vectors = vectors[[ids.index(i) for i in coco]]
    lines = [
        f"model: {encoder.info.label()}",
        "",
        "| caption -> image | queries | R@1 | R@5 | chance R@1 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, gallery_ids, gallery_vectors in [
        ("22 COCO photos", coco, coco_vectors),
        ("all 32 example photos", ids, vectors),
    ]:
        r = caption_retrieval(encoder, gallery_ids, gallery_vectors, captions)
        lines.append(f"| {label} | {r['queries']} | {r['R@1']:.3f} | {r['R@5']:.3f} | {1 / len(gallery_ids):.3f} |")
    moves = delta_moves(encoder, ids, vectors)
    lines += [
        "",
        "| cat photo | cat -> X | best rank of an X photo: image only | with delta (λ=1) |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| {m['reference']} | {m['target']} | {m['rank_image_only']} | {m['rank_delta']} |" for m in moves]
    improved = sum(m["rank_delta"] < m["rank_image_only"] for m in moves)
    first = sum(m["rank_delta"] == 1 for m in moves)
    lines += ["", f"delta moved an X photo up in {improved}/{len(moves)} cases; to rank 1 in {first}/{len(moves)}."]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
