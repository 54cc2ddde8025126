"""Threads of the caption decoders' LM passes, same run, same photos: ``lm_threads`` 1 (the default) vs 0 (torch's
setting for everything), interleaved, wall and CPU seconds and the load average per caption (docs/captioning.md).

    nice python bench/caption_threads.py --photos 2 --zerocap-tokens 2

Captions are compared token for token between the two settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from caption_bench import COCO, CountingEncoder, run_decoder  # noqa: E402  (also puts the repo's src on the path)

from clipmath.caption import MagicConfig, MagicDecoder, ZeroCapConfig, ZeroCapDecoder, load_language_model  # noqa: E402
from clipmath.encoders import load_encoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--zerocap-tokens", type=int, default=2, help="ZeroCap target_seq_length (defaults otherwise)")
    args = parser.parse_args()
    encoder = load_encoder("offline-imagenet-minilm")
    counter = CountingEncoder(encoder)
    lm = load_language_model("smollm2-135m")
    names = sorted(p.name for p in COCO.glob("*.jpg"))[: args.photos]
    targets = encoder.encode_images([Image.open(COCO / n) for n in names])
    magic, zerocap = MagicDecoder(lm, encoder), ZeroCapDecoder(lm, encoder)
    magic.caption(targets[0], MagicConfig(max_length=2))  # warm-up
    print(f"encoder: {encoder.info.label()}\nLM: {lm.label()}\ncpus: {os.cpu_count()}\n")
    print("| decoder | photo | lm_threads | s / caption | CPU s | load (1 min) | tokens |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    decoders = (
        ("magic", magic, lambda n: MagicConfig(lm_threads=n)),
        ("zerocap", zerocap, lambda n: ZeroCapConfig(lm_threads=n, target_seq_length=args.zerocap_tokens)),
    )
    for label, decoder, config in decoders:
        for name, target in zip(names, targets):
            tokens = {}
            for threads in (0, 1):
                decoder._texts.clear()  # each run encodes its own texts
                run = run_decoder(decoder, target, config(threads), counter)
                tokens[threads] = run["tokens"]
                print(f"| {label} | {name[-10:-4]} | {threads} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | "
                      f"{run['load_1min'][0]:.1f} | "
                      f"{'same' if threads and tokens[0] == run['tokens'] else len(run['tokens'])} |", flush=True)


if __name__ == "__main__":
    main()
