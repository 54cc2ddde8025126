"""Record ZeroCap captions of fixed targets at small settings, to prove later optimisations change no output.

Run once with the implementation to compare against (recorded from commit 853c73d, before the batched scorer):
    PYTHONPATH=src python tests/data/caption/make_zerocap_reference.py tests/data/caption/zerocap_reference.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from PIL import Image

from clipmath.caption import ZeroCapConfig, ZeroCapDecoder, load_language_model
from clipmath.encoders import load_encoder

REPO = Path(__file__).resolve().parents[3]
CASES = [
    # (lm, encoder, target: ("text", s) or ("image", gallery path), config fields)
    (
        "tiny-random-lm",
        "tiny-random-clip",
        ("text", "a photo of a cat"),
        {"beam_size": 3, "target_seq_length": 5, "num_iterations": 1, "candidates": 32},
    ),
    (
        "tiny-random-lm",
        "tiny-random-clip",
        ("text", "a dog on a sofa"),
        {"beam_size": 2, "target_seq_length": 4, "num_iterations": 2, "candidates": 16, "reset_context_delta": False},
    ),
    (
        "tiny-random-lm",
        "tiny-random-clip",
        ("text", "a red car"),
        {"beam_size": 4, "target_seq_length": 6, "num_iterations": 2, "candidates": 48},
    ),
    (
        "smollm2-135m",
        "offline-imagenet-minilm",
        ("image", "skimage/chelsea.png"),
        {"beam_size": 2, "target_seq_length": 4, "num_iterations": 2, "candidates": 64},
    ),
    (
        "smollm2-135m",
        "offline-imagenet-minilm",
        ("image", "skimage/coffee.png"),
        {"beam_size": 3, "target_seq_length": 5, "num_iterations": 2, "candidates": 128},
    ),
]


def target_of(encoder, kind: str, value: str):
    if kind == "text":
        return encoder.encode_texts([value])[0]
    return encoder.encode_images([Image.open(REPO / "examples" / "gallery" / value)])[0]


def main(out: str) -> None:
    records = []
    for lm_name, encoder_name, (kind, value), fields in CASES:
        lm, encoder = load_language_model(lm_name), load_encoder(encoder_name)
        config = ZeroCapConfig(**fields)
        start = time.perf_counter()
        captions = ZeroCapDecoder(lm, encoder).caption(target_of(encoder, kind, value), config)
        seconds = time.perf_counter() - start
        records.append(
            {
                "lm": lm_name,
                "encoder": encoder_name,
                "target": [kind, value],
                "config": fields,
                "captions": [
                    {"text": c.text, "tokens": list(c.tokens), "clip_score": c.clip_score, "lm_score": c.lm_score}
                    for c in captions
                ],
                "seconds": round(seconds, 2),
            }
        )
        print(lm_name, value, [c.text for c in captions], f"{seconds:.1f}s", flush=True)
    Path(out).write_text(
        json.dumps({"recorded_with": "clipmath zerocap.py at commit 853c73d", "cases": records}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1])
