"""Caption decoders side by side, same run, same photos: speed, target score, COCO metrics (docs/captioning.md).

    nice python bench/caption_bench.py                                   # 22 COCO photos, offline models
    nice python bench/caption_bench.py --photos 6 --zerocap-photos 2 --adapted-lm runs/caption-lm
    nice python bench/caption_bench.py --zerocap-settings default        # ZeroCap at its defaults (slow!)
    python bench/caption_bench.py --zerocap-photos 22 --zerocap-settings small --no-before --no-plain \
        --decap runs/decap                                   # the four decoders, one run (docs/captioning.md)
    python bench/caption_bench.py --rows OUT.partial.json --same-photos  # score a run stopped early

Rows:
* ``magic`` at its defaults (k 45, α 0.1, β 2.0, 16 tokens) with the base LM, prompt "Image of a";
* ``magic + adapted LM`` (``--adapted-lm``: a ``clipmath train caption-lm`` folder), no prompt (MAGIC's setting);
* ``plain LM``: the same greedy decoding without guidance or penalty (α = β = 0), for the target score;
* ``zerocap`` (this code) and ``zerocap before`` (``zerocap.py`` of commit 853c73d, read from git): the same
  photos and settings, interleaved photo by photo, with the captions compared token for token;
* ``memory`` (``--corpus``): the nearest caption of the corpus, no LM, no training;
* ``decap`` (``--decap``: a ``train_decap`` checkpoint): DeCap, greedy, the photo projected onto the corpus memory;
* the published MAGIC and ZeroCap captions of the COCO photos (GPT-2 + CLIP ViT-B/32, from MAGIC's release).

A corpus (or a DeCap checkpoint's training corpus) that holds any reference caption of an evaluated photo is
refused before anything loads (exit 2): its scores would measure a lookup, not captioning.

The target score is the cosine between the photo's embedding and the caption text's (without the prompt) in the
encoder's space. BLEU-4 / METEOR / ROUGE-L / CIDEr score the caption text against the photo's human captions
(``examples/captions.json``) — on at most 22 photos: a small set, indicative only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("CLIPMATH_SRC", str(REPO / "src")))

from clipmath.caption import (  # noqa: E402
    MagicConfig,
    MagicDecoder,
    ZeroCapConfig,
    ZeroCapDecoder,
    caption_metrics,
    load_language_model,
)
from clipmath.encoders import load_encoder  # noqa: E402

COCO = REPO / "examples" / "gallery" / "coco"
REFERENCES = json.loads((REPO / "examples" / "captions.json").read_text())
BEFORE_COMMIT = "853c73d"  # zerocap.py before the batched scorer
ZEROCAP_SETTINGS = {
    "tiny": ZeroCapConfig(beam_size=2, target_seq_length=4, num_iterations=2, candidates=64),
    "small": ZeroCapConfig(beam_size=2, target_seq_length=6, num_iterations=3, candidates=64),
    "medium": ZeroCapConfig(beam_size=3, target_seq_length=8, num_iterations=3, candidates=256),
    "default": ZeroCapConfig(),
}


def load_before_decoder():
    """``ZeroCapDecoder`` as it was at :data:`BEFORE_COMMIT` (its module read from git, imported standalone)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE_COMMIT}:src/clipmath/caption/zerocap.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "zerocap_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("zerocap_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.ZeroCapDecoder


class CountingEncoder:
    """Counts the texts that reach the encoder's text tower (memo misses: the work ZeroCap's time goes into)."""

    def __init__(self, encoder) -> None:
        self.texts = 0
        self._encode_texts = encoder.encode_texts
        encoder.encode_texts = self

    def __call__(self, texts, **kwargs):
        self.texts += len(texts)
        return self._encode_texts(texts, **kwargs)


def run_decoder(decoder, target, config, counter: CountingEncoder) -> dict:
    """One caption: wall and process CPU seconds (CPU time is steadier on a shared machine), texts encoded."""
    before_texts, load = counter.texts, os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    best = decoder.caption(target, config)[0]
    return {"text": best.text, "tokens": list(best.tokens), "score": best.clip_score,
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "texts_encoded": counter.texts - before_texts, "load_1min": [load, os.getloadavg()[0]]}


def metrics(texts: list[str], names: list[str], meteor: bool) -> dict:
    refs = [REFERENCES[n]["captions"] for n in names]
    return caption_metrics(texts, refs, meteor=meteor).percent()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=22, help="COCO photos for the MAGIC rows (of 22)")
    parser.add_argument("--zerocap-photos", type=int, default=2, help="photos for the ZeroCap rows (slow)")
    parser.add_argument("--zerocap-settings", choices=sorted(ZEROCAP_SETTINGS), default="small")
    parser.add_argument("--adapted-lm", help="folder written by `clipmath train caption-lm`")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--zerocap-from", type=int, default=0, help="first photo (index) of the ZeroCap rows")
    parser.add_argument("--zerocap-adapted", action="store_true", help="also ZeroCap with --adapted-lm")
    parser.add_argument("--lm", default="smollm2-135m")
    parser.add_argument("--model", default="offline-imagenet-minilm")
    parser.add_argument("--no-meteor", action="store_true")
    parser.add_argument("--no-zerocap", action="store_true", help="MAGIC rows only")
    parser.add_argument("--no-base", action="store_true", help="only the adapted-LM rows (with --adapted-lm)")
    parser.add_argument("--no-before", action="store_true", help="no 'zerocap before' rows (ZeroCap now only)")
    parser.add_argument("--corpus", type=Path, default=REPO / "examples" / "caption-corpus" / "coco_captions.txt",
                        help="caption corpus of the memory and decap rows")
    parser.add_argument("--no-memory", action="store_true", help="no 'memory' row")
    parser.add_argument("--decap", type=Path, help="a DeCap checkpoint (train_decap output) for the 'decap' row")
    parser.add_argument("--no-plain", action="store_true", help="no 'plain LM' row")
    parser.add_argument("--rows", type=Path, help="summarise the rows an earlier run saved (OUT.partial.json, "
                        "e.g. of a run stopped early) instead of decoding")
    parser.add_argument("--same-photos", action="store_true",
                        help="score every row on the photos all rows share (a row stopped early decides)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "caption_bench.json")
    args = parser.parse_args()

    names = sorted(p.name for p in COCO.glob("*.jpg"))[: args.photos]
    check_no_leakage(args.corpus, args.decap, names)
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = load_encoder(args.model)
    targets = encoder.encode_images([Image.open(COCO / n) for n in names])
    if args.rows:
        rows, lm_label = json.loads(args.rows.read_text()), f"{args.lm} (rows read from {args.rows})"
    else:
        rows, lm_label = decode_all(args, names, encoder, targets)
    if args.same_photos:
        shared = set.intersection(*({i["photo"] for i in items} for items in rows.values() if items))
        rows = {label: [i for i in items if i["photo"] in shared] for label, items in rows.items()}
        targets = [t for n, t in zip(names, targets) if n in shared]
        names = [n for n in names if n in shared]

    summary = {}
    for label, items in rows.items():
        if not items:
            continue
        photos = [i["photo"] for i in items]
        summary[label] = {
            "photos": len(items),
            "seconds_per_caption": float(np.mean([i["seconds"] for i in items])),
            "cpu_seconds_per_caption": float(np.mean([i["cpu_seconds"] for i in items])),
            "texts_encoded_per_caption": float(np.mean([i["texts_encoded"] for i in items])),
            "target_score": float(np.mean([i["score"] for i in items])),
            "metrics": metrics([i["text"] for i in items], photos, not args.no_meteor),
        }
    for published in () if args.no_base else ("magic", "zerocap"):
        texts = [REFERENCES[n][published] for n in names]
        scores = encoder.encode_texts(texts) @ np.asarray(targets).T
        summary[f"published {published}"] = {
            "photos": len(names),
            "target_score": float(np.mean(np.diag(scores))),
            "metrics": metrics(texts, names, not args.no_meteor),
        }
    same = [a["tokens"] == b["tokens"] for a, b in zip(rows.get("zerocap", []), rows.get("zerocap before", []))]
    report = {
        "encoder": encoder.info.label(), "lm": lm_label, "adapted_lm": args.adapted_lm,
        "zerocap_settings": args.zerocap_settings, "zerocap_identical": same,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "summary": summary, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))


def decode_all(args, names: list[str], encoder, targets) -> tuple[dict[str, list[dict]], str]:
    """Caption every photo with every chosen decoder; the rows per decoder and the LM's label."""
    counter = CountingEncoder(encoder)
    lm = load_language_model(args.lm)
    print(f"encoder: {encoder.info.label()}\nLM: {lm.label()}\nphotos: {len(names)}\n"
          f"torch threads: {torch.get_num_threads()}", flush=True)
    rows: dict[str, list[dict]] = {}

    magic = MagicDecoder(lm, encoder)
    magic.caption(targets[0], MagicConfig(max_length=2))  # warm-up: vocabulary tables, first-call costs
    variants = {"magic": (magic, MagicConfig()), "plain LM": (magic, MagicConfig(alpha=0.0, beta=0.0))}
    if args.no_plain:
        del variants["plain LM"]
    if args.no_base:
        variants = {}
    adapted = load_language_model(args.adapted_lm) if args.adapted_lm else None
    if adapted is not None:
        variants["magic + adapted LM"] = (MagicDecoder(adapted, encoder), MagicConfig(cond_text=""))
    variants.update(corpus_variants(args, encoder, targets[0]))
    for label, (decoder, config) in variants.items():
        rows[label] = []
        for name, target in zip(names, targets):
            add_row(rows, label, name, run_decoder(decoder, target, config, counter), args.out)

    zc_config = ZEROCAP_SETTINGS[args.zerocap_settings]
    zerocaps = [] if args.no_before else [("zerocap before", load_before_decoder()(lm, encoder))]
    if not args.no_base:
        zerocaps.append(("zerocap", ZeroCapDecoder(lm, encoder)))
    if adapted is not None and args.zerocap_adapted:
        zerocaps.append(("zerocap + adapted LM", ZeroCapDecoder(adapted, encoder)))
    for label, _ in zerocaps:
        rows[label] = []
    first = args.zerocap_from
    chosen = names[first : first + (0 if args.no_zerocap else args.zerocap_photos)]
    for name, target in zip(chosen, targets[first:]):
        for label, decoder in zerocaps:
            add_row(rows, label, name, run_decoder(decoder, target, zc_config, counter), args.out)
    return rows, lm.label()


def check_no_leakage(corpus: Path, decap: Path | None, names: list[str]) -> None:
    """Exit 2 when the corpus, or the DeCap checkpoint's training corpus, holds an evaluated photo's reference."""
    from clipmath.caption.memory import corpus_digest, overlapping_captions, read_corpus

    references = [c for n in names for c in REFERENCES[n]["captions"]]
    corpora = [("corpus", corpus)]
    if decap is not None:
        recorded = json.loads((decap / "clipmath.json").read_text())["extra"]["corpus"]
        if not Path(recorded["path"]).is_file() or corpus_digest(read_corpus(recorded["path"])) != recorded["sha256"]:
            print(f"error: the training corpus of {decap} ({recorded['path']}) is not here as trained: "
                  "cannot check it for the evaluated photos' captions", file=sys.stderr)
            sys.exit(2)
        corpora.append((f"training corpus of {decap}", Path(recorded["path"])))
    for what, path in corpora:
        leaked = overlapping_captions(read_corpus(path), references)
        if leaked:
            print(f"error: the {what} {path} holds {len(leaked)} reference caption(s) of the evaluated photos "
                  f"(e.g. {leaked[0]!r}): hold them out", file=sys.stderr)
            sys.exit(2)


def corpus_variants(args, encoder, warm_target) -> dict:
    """The rows decoding from the caption corpus: nearest caption, and DeCap when a checkpoint is given."""
    from clipmath.caption.decap import DecapDecoder, DecapOptions
    from clipmath.caption.memory import CaptionMemory, MemoryConfig, MemoryDecoder

    variants = {}
    memory = CaptionMemory.from_file(args.corpus, encoder, progress=True)
    if not args.no_memory:
        variants["memory"] = (MemoryDecoder(None, encoder, memory=memory), MemoryConfig(captions=1))
    if args.decap is not None:
        options = DecapOptions(checkpoint=str(args.decap))
        decap = DecapDecoder(None, encoder, options, memory=memory)
        decap.caption(warm_target)  # warm-up
        variants["decap"] = (decap, options)
    return variants


def add_row(rows: dict[str, list[dict]], label: str, photo: str, measured: dict, out: Path) -> None:
    """Record one caption, print it, and save the rows so far beside the final report (``OUT.partial.json``): a long
    run that dies keeps what it measured."""
    rows[label].append({"photo": photo, **measured})
    print(f"{label:20s} {photo} {_seconds(measured['seconds']):>6}s  {measured['text']}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_suffix(".partial.tmp")
    staging.write_text(json.dumps(rows, indent=1))
    staging.replace(out.with_suffix(".partial.json"))


def markdown(report: dict) -> str:
    lines = [
        "| decoder | photos | s / caption | CPU s / caption | texts encoded | target score | BLEU-4 | METEOR | ROUGE-L "
        "| CIDEr |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, row in report["summary"].items():
        m = row["metrics"]
        seconds = _seconds(row.get("seconds_per_caption"))
        cpu = _seconds(row.get("cpu_seconds_per_caption"))
        texts = f"{row['texts_encoded_per_caption']:.0f}" if "texts_encoded_per_caption" in row else ""
        cells = [f"{m[k]:.1f}" if m.get(k) is not None else "–" for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")]
        lead = f"| {label} | {row['photos']} | {seconds} | {cpu} | {texts} | {row['target_score']:.3f} | "
        lines.append(lead + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    """Seconds for the table: milliseconds visible below a second (the corpus decoders), tenths above."""
    if value is None:
        return ""
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


if __name__ == "__main__":
    main()
