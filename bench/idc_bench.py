"""Image-difference captioning benchmark: CLIP4IDC's two stages on a generated change set, and GPU throughput.

    python bench/idc_bench.py learn [--pairs 1000] [--adapt-epochs 2] [--caption-epochs 60] [--out results.md]
    python bench/idc_bench.py throughput --device cuda [--pairs 2048]      # ViT-B/32-sized random CLIP
    python bench/idc_bench.py throughput --device cpu --dry-run            # the same code path, tiny, on a CPU

``learn`` renders a change set (CLEVR-Change layout), builds a tiny random CLIP whose tokenizer knows the change
set's words (``build_change_set_clip``), trains stage 1 (pair↔caption contrastive) and stage 2 (caption decoder,
initialised from stage 1), and prints the learning table: losses, retrieval R@k before/after adaptation, training
throughput, and caption scores on held-out pairs of the trained captioner against the constant baseline (the most
frequent training caption) and the zero-shot captioner (MAGIC/ZeroCap on after − before with the same random CLIP),
overall and per change type. The model has random weights: the numbers show that the code learns, not quality.

``throughput`` times one epoch of each stage at CLIP4IDC's batch sizes (adapt 128, caption 16 and 64) with a
randomly initialised CLIP of ViT-B/32's shape (224 px, patch 32, 12+12 layers), in mixed precision with gradient
checkpointing off and on, and reports pairs/s and peak GPU memory. Random weights, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from clipmath.data.change_set import build_change_set_clip, make_change_set  # noqa: E402
from clipmath.data.clevr_change import load_clevr_change  # noqa: E402
from clipmath.encoders import load_encoder  # noqa: E402
from clipmath.eval.difference import (  # noqa: E402
    caption_pairs,
    most_frequent_caption,
    score_difference_captions,
)
from clipmath.train.idc import (  # noqa: E402
    AdaptTask,
    IdcAdaptConfig,
    IdcCaptionConfig,
    adapt_task_factory,
    caption_task_factory,
    retrieval_validator,
)
from clipmath.train.loop import fit  # noqa: E402


def learn(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="idc-bench-"))
    root = make_change_set(work / "clevr_change", pairs=args.pairs, seed=args.seed, image_size=64)
    train = load_clevr_change(root, "train").pairs
    val = load_clevr_change(root, "val").pairs
    test = load_clevr_change(root, "test").pairs
    encoder = load_encoder(str(build_change_set_clip(work / "clip", seed=args.seed)))
    lines = [f"model: {encoder.info.label()}", f"change set: {args.pairs} ids, seed {args.seed}: "
             f"{len(train)} train / {len(val)} val / {len(test)} test pairs", ""]

    recalls = retrieval_validator(val)
    untrained = recalls(AdaptTask(encoder, IdcAdaptConfig(), train))
    adapt = IdcAdaptConfig(epochs=args.adapt_epochs, batch_size=32, lr=args.lr, coef_lr=1.0, progress=False)
    # coef_lr 1: nothing in a random CLIP is pretrained
    stage1 = fit(adapt_task_factory(encoder, train), adapt, work / "adapt", recalls, resume=False)
    caption = IdcCaptionConfig(
        epochs=args.caption_epochs, batch_size=32, lr=args.lr, coef_lr=1.0, dropout=0.0,
        init_from=str(work / "adapt"), progress=False, validate_every=10**6,
    )
    stage2 = fit(caption_task_factory(encoder, train), caption, work / "caption", None, resume=False)

    lines += ["| stage | epochs | loss first → last | pairs/s (train) | held-out metric: untrained → trained |",
              "| --- | ---: | --- | ---: | --- |"]
    key = "text->pair R@1"
    lines.append(
        f"| 1 adapt | {args.adapt_epochs} | {stage1.first_loss:.3f} → {stage1.last_loss:.3f} | "
        f"{stage1.examples_per_second:.1f} | {key} {untrained[key]:.3f} → {stage1.final_metrics[key]:.3f}; "
        f"pair->text R@5 {untrained['pair->text R@5']:.3f} → {stage1.final_metrics['pair->text R@5']:.3f} |"
    )
    lines.append(
        f"| 2 caption | {args.caption_epochs} | {stage2.first_loss:.3f} → {stage2.last_loss:.3f} | "
        f"{stage2.examples_per_second:.1f} | (captions below) |"
    )

    started = time.perf_counter()
    trained = caption_pairs(stage2.task.describe, test)
    seconds = time.perf_counter() - started
    constant = most_frequent_caption(train)
    systems = {"trained (CLIP4IDC stage 2)": trained, f"constant: \"{constant}\"": {p.pair_id: constant for p in test}}
    zero_shot = _zero_shot(encoder, test[: args.zero_shot_pairs]) if args.zero_shot_pairs else None
    lines += ["", f"test pairs captioned by the trained model: {len(test) / seconds:.1f} pairs/s (beam 3)", ""]
    lines += ["| system | pairs | BLEU-4 | METEOR | ROUGE-L | CIDEr |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    reports = {}
    for name, predictions in systems.items():
        reports[name] = score_difference_captions(predictions, test, meteor=not args.no_meteor)
    if zero_shot is not None:
        subset = [p for p in test if p.pair_id in zero_shot[0]]
        name = f"zero-shot ({zero_shot[1]}), first {len(subset)} pairs"
        reports[name] = score_difference_captions(zero_shot[0], subset, meteor=not args.no_meteor, by_type=False)
    for name, report in reports.items():
        s = report.overall.percent()
        meteor = "–" if s["METEOR"] is None else f"{s['METEOR']:.2f}"
        lines.append(f"| {name} | {report.overall.count} | {s['BLEU-4']:.2f} | {meteor} | {s['ROUGE-L']:.2f} | "
                     f"{s['CIDEr']:.2f} |")
    lines += ["", "Trained captioner per group (RobustChangeCaptioning's breakdown):", "",
              reports["trained (CLIP4IDC stage 2)"].markdown(), "",
              "Constant baseline per group:", "", reports[f"constant: \"{constant}\""].markdown()]
    examples = [f"- {p.change_type}: \"{trained[p.pair_id]}\" (reference: \"{p.captions[0]}\")" for p in test[:6]]
    lines += ["", "Examples:", *examples]
    return "\n".join(lines)


def _zero_shot(encoder, pairs) -> tuple[dict[str, str], str]:
    """Zero-shot captions with the registered decoder and the tiny test LM (both labelled)."""
    from clipmath.caption import load_language_model
    from clipmath.caption.difference import zero_shot_difference

    lm = load_language_model("tiny-random-lm")
    out = {p.pair_id: zero_shot_difference(p.before, p.after, encoder, lm).text for p in pairs}
    return out, f"tiny-random-lm, random weights, on {encoder.info.model_id}"


def throughput(args: argparse.Namespace) -> str:
    """One epoch per stage and batch size with a ViT-B/32-shaped random CLIP (tiny with --dry-run)."""
    from transformers import CLIPConfig, CLIPModel

    from clipmath.encoders.hf_clip import HFClipEncoder

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="idc-throughput-"))
    base = load_encoder(str(build_change_set_clip(work / "clip", seed=0)))  # its tokenizer and image processor
    if args.dry_run:
        config = base.model.config
        label, size, pairs = "tiny random CLIP (dry run)", 64, min(args.pairs, 64)
    else:
        config = CLIPConfig(text_config={"vocab_size": max(49408, len(base.tokenizer))}, vision_config={},
                            projection_dim=512)  # CLIP's vocabulary size: the decoder's output layer as in ViT-B/32
        label, size, pairs = "random CLIP of ViT-B/32's shape (224 px, patch 32, 12+12 layers, 512-d)", 224, args.pairs
    model = CLIPModel(config)
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    encoder = HFClipEncoder(model, base.tokenizer, processor, "random-vit-b32-shape", device=device, pretrained=False)
    root = make_change_set(work / "cs", pairs=max(3, pairs // 2 + 2), seed=0, image_size=size, splits=(0.98, 0.01))
    data = load_clevr_change(root, "train").pairs[:pairs]
    lines = [f"model: {label}; device {device}; {len(data)} pairs per epoch; random weights (speed only)", "",
             "| stage | batch | gradient checkpointing | pairs/s | peak GPU memory |", "| --- | ---: | --- | ---: | ---: |"]
    runs = [("adapt", 128), ("caption", 16), ("caption", 64)]
    for stage, batch in runs:
        for checkpointing in (False, True):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            common = dict(epochs=1, batch_size=batch, coef_lr=1e-3, device=args.device, progress=False,
                          gradient_checkpointing=checkpointing, image_cache=10**6)
            if stage == "adapt":
                result = fit(adapt_task_factory(encoder, data), IdcAdaptConfig(**common), work / f"{stage}-{batch}",
                             resume=False)
            else:
                result = fit(caption_task_factory(encoder, data), IdcCaptionConfig(**common),
                             work / f"{stage}-{batch}", resume=False)
            memory = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "–"
            note = "" if device.type == "cuda" else " (no effect on CPU)"
            lines.append(f"| {stage} | {batch} | {'on' if checkpointing else 'off'}{note} | "
                         f"{result.examples_per_second:.1f} | {memory} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("learn", "throughput"))
    parser.add_argument("--pairs", type=int, default=1000, help="learn: scene ids; throughput: pairs per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--adapt-epochs", type=int, default=2)
    parser.add_argument("--caption-epochs", type=int, default=60)
    parser.add_argument("--zero-shot-pairs", type=int, default=0, help="zero-shot captions of the first N test pairs")
    parser.add_argument("--no-meteor", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="throughput: tiny model, few pairs (CPU check)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = learn(args) if args.mode == "learn" else throughput(args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
