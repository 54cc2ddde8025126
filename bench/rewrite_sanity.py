"""Every compose method that takes an image and a text, on the hand-made sanity set of the example photos
(``bench/data/rewrite_sanity.json``): R@1, R@5 and seconds per query, plus the template-vs-LM rewriter comparison.

    nice python bench/rewrite_sanity.py                                  # offline model, template rewriter
    nice python bench/rewrite_sanity.py --lm-rewriter smollm2-135m --captions 3 --out bench/results/x.json

A sanity set (15 queries, 32 photos), not a benchmark: it shows the pipelines run and which way they move; its
numbers compare with no published figure. Captions come from MAGIC steered by the offline encoder with the caption
LM named by ``--caption-lm``; the ensemble methods use ``--captions`` captions (the papers: 15). Seconds include
the captions and rewrites a row made itself (rows share one cache: see each row's call counts).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "gallery"


def run(args: argparse.Namespace) -> dict:
    from clipmath.caption.rewrite_cache import RewriteCache
    from clipmath.caption.rewrite_methods import EnsembleSettings, RewriteSettings
    from clipmath.compose import CompositionQuery, get_composer, method_spec
    from clipmath.encoders import load_encoder

    data = json.loads((ROOT / "bench" / "data" / "rewrite_sanity.json").read_text())
    encoder = load_encoder(args.model)
    names = sorted(p.relative_to(GALLERY).as_posix() for p in GALLERY.rglob("*") if p.is_file())
    from PIL import Image

    gallery = encoder.encode_images([Image.open(GALLERY / n).convert("RGB") for n in names])
    row = {n: i for i, n in enumerate(names)}
    queries = [CompositionQuery(reference=gallery[row[q["reference"]]], text=q["text"]) for q in data["queries"]]
    targets = [row[q["target"]] for q in data["queries"]]
    refs = [row[q["reference"]] for q in data["queries"]]
    plans = [(m, "template") for m in ("image", "text", "sum", "cirevl", "ldre", "seize", "pdv")]
    plans += [("cirevl", f"lm:{lm}") for lm in args.lm_rewriter]
    rows, shared = [], RewriteCache()  # one cache: later rows reuse earlier captions (their calls say so)
    for method, rewriter in plans:
        composer = get_composer(method)
        if hasattr(composer, "settings"):
            base = EnsembleSettings if method in ("ldre", "seize") else RewriteSettings
            captions = args.captions if method in ("ldre", "seize") else 1
            composer = type(composer)(base(captions=captions, rewriter=rewriter, language_model=args.caption_lm,
                                           cache=False), cache=shared)  # fmt: skip
            method_spec(method).adopt(composer)
        started = time.perf_counter()
        vectors = composer.compose(encoder, queries)
        if hasattr(composer, "gallery_scores"):
            scores = composer.gallery_scores(encoder, queries, gallery)
        else:
            scores = vectors @ gallery.T
        seconds = (time.perf_counter() - started) / len(queries)
        scores[np.arange(len(refs)), refs] = -np.inf  # the reference is never an answer
        ranks = [int((s > s[t]).sum()) for s, t in zip(scores, targets)]
        why = composer.explain(encoder, queries[:2]) if hasattr(composer, "explain") else None
        rows.append({"method": method, "rewriter": rewriter if why else "-",
                     "R@1": 100 * np.mean([r < 1 for r in ranks]), "R@5": 100 * np.mean([r < 5 for r in ranks]),
                     "seconds_per_query": round(seconds, 3), "caption_calls": getattr(composer, "caption_calls", 0),
                     "rewrite_calls": getattr(composer, "rewrite_calls", 0), "examples": why})  # fmt: skip
        last = rows[-1]
        print(f"{method:7s} {last['rewriter']:24s} R@1 {last['R@1']:5.1f}  R@5 {last['R@5']:5.1f}  {seconds:7.2f} "
              f"s/query  captions made {last['caption_calls']}, rewrites {last['rewrite_calls']}", flush=True)
    return {"model": encoder.info.label(), "caption_lm": args.caption_lm, "captions": args.captions,
            "queries": len(queries), "gallery": len(names), "about": data["about"], "rows": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline-imagenet-minilm")
    parser.add_argument("--caption-lm", default="smollm2-135m")
    parser.add_argument("--captions", type=int, default=3, help="captions of the ensemble methods (papers: 15)")
    parser.add_argument("--lm-rewriter", action="append", default=[], help="also run cirevl with lm:NAME")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory():
        result = run(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
