"""Caption ZeroCap's own examples with the chosen models and time it (the figures in docs/captioning.md).

    python bench/caption_examples.py                       # offline models, ZeroCap's default settings
    python bench/caption_examples.py --settings small      # the small settings the tests use
    python bench/caption_examples.py --only chelsea arithmetic --out runs/captions.json

For every example it prints the ZeroCap captions (best CLIP score first) with their scores, the plain-LM caption
(same prompt and beams, no guidance) for contrast, the mean score of the human reference captions where the photo
has them, and the wall and CPU time per caption.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("CLIPMATH_SRC", str(REPO / "src")))

from clipmath.caption import PRESETS, ZeroCapConfig, ZeroCapDecoder, load_language_model  # noqa: E402
from clipmath.compose.expression import embed_terms, parse_expression, weighted_sum  # noqa: E402
from clipmath.encoders import load_encoder  # noqa: E402

GALLERY = REPO / "examples" / "gallery"
REFERENCES = json.loads((REPO / "examples" / "captions.json").read_text())


@dataclass(frozen=True)
class Example:
    name: str
    expression: str  # clipmath expression over gallery-relative image paths
    preset: str = "caption"


EXAMPLES = [
    Example("arithmetic", "+arithmetic/woman2.jpg +arithmetic/king2.jpg -arithmetic/man2.jpg", "arithmetic"),
    Example("king", "arithmetic/king2.jpg"),
    Example("coco-008775", "coco/COCO_val2014_000000008775.jpg"),
    Example("coco-097017", "coco/COCO_val2014_000000097017.jpg"),
    Example("coco-406395", "coco/COCO_val2014_000000406395.jpg"),
    Example("coco-557731", "coco/COCO_val2014_000000557731.jpg"),
    Example("ocr-welcome", "ocr/welcome_sign.jpg", "ocr"),
    Example("chelsea", "skimage/chelsea.png"),
    Example("coffee", "skimage/coffee.png"),
    Example("rocket", "skimage/rocket.jpg"),
]
SMALL = {"beam_size": 2, "target_seq_length": 6, "num_iterations": 3, "candidates": 64}


def target_of(example: Example, encoder) -> np.ndarray:
    terms = parse_expression(example.expression)
    terms = [replace(t, image=str(GALLERY / t.image)) if t.image else t for t in terms]
    return weighted_sum(embed_terms(encoder, terms), [t.weight for t in terms])


def run(example: Example, decoder: ZeroCapDecoder, config: ZeroCapConfig) -> dict:
    target = target_of(example, decoder.encoder)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    captions = decoder.caption(target, config, progress=True)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    plain = decoder.caption(target, replace(config, num_iterations=0))
    refs = REFERENCES.get(Path(example.expression).name, {})
    ref_score = None
    if refs.get("captions"):
        ref_score = float(np.mean(decoder.encoder.encode_texts(refs["captions"]) @ target))
    return {
        "example": example.name,
        "expression": example.expression,
        "preset": example.preset,
        "captions": [{"text": c.full_text, "clip_score": c.clip_score, "lm_score": c.lm_score} for c in captions],
        "plain_lm": {"text": plain[0].full_text, "clip_score": plain[0].clip_score},
        "human_references": refs.get("captions"),
        "human_reference_mean_clip_score": ref_score,
        "published_zerocap": refs.get("zerocap"),
        "seconds_wall": wall,
        "seconds_cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2-135m")
    parser.add_argument("--model", default="offline-imagenet-minilm")
    parser.add_argument("--settings", choices=["default", "small"], default="default")
    parser.add_argument("--only", nargs="*", help="example names to run")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    lm, encoder = load_language_model(args.lm), load_encoder(args.model)
    print(
        f"LM: {lm.label()}\nencoder: {encoder.info.label()}\nsettings: {args.settings}; "
        f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; cpus: {os.cpu_count()}",
        flush=True,
    )
    decoder = ZeroCapDecoder(lm, encoder)
    results = []
    for example in EXAMPLES:
        if args.only and example.name not in args.only:
            continue
        config = PRESETS[example.preset]
        if args.settings == "small":
            config = replace(config, **SMALL)
        result = run(example, decoder, config)
        result.update(settings=args.settings, config=asdict(config), lm=lm.label(), encoder=encoder.info.label())
        results.append(result)
        best = result["captions"][0]
        print(
            f"\n## {example.name}: {example.expression}  [{example.preset}]\n"
            f"  best:  {best['text']!r}  clip {best['clip_score']:.3f}  lm {best['lm_score']:.2f}\n"
            + "".join(
                f"  beam:  {c['text']!r}  clip {c['clip_score']:.3f}  lm {c['lm_score']:.2f}\n"
                for c in result["captions"][1:]
            )
            + f"  plain LM: {result['plain_lm']['text']!r}  clip {result['plain_lm']['clip_score']:.3f}\n"
            + (
                f"  human refs mean clip {result['human_reference_mean_clip_score']:.3f}; "
                f"published ZeroCap (GPT-2 + CLIP): {result['published_zerocap']!r}\n"
                if result["human_references"]
                else ""
            )
            + f"  time: {result['seconds_wall']:.0f} s wall, {result['seconds_cpu']:.0f} s CPU",
            flush=True,
        )
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
