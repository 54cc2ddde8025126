"""Training benchmark: for each learned method, the loss before/after, trained vs untrained retrieval on held-out
queries, and CPU throughput, on the same generated datasets as tests/test_train_learning.py.

    python bench/train_bench.py [--model offline-imagenet-minilm] [--threads 2] [--out results.md]

The fine-tuning stage runs on tiny-random-clip (the offline model cannot be saved as a transformers CLIP), so its
numbers are plumbing only. Numbers depend on the machine and its load; the script prints which model ran.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from clipmath.compose import ElementwiseSum, get_composer  # noqa: E402
from clipmath.compose.adapted_delta import AdaptationHeads, AdaptedDelta  # noqa: E402
from clipmath.compose.searle import ConceptVocabulary, InversionSettings, OtiComposer  # noqa: E402
from clipmath.encoders import load_encoder  # noqa: E402
from clipmath.train.adapter import adapter_task_factory  # noqa: E402
from clipmath.train.clip4cir import FinetuneTask, combiner_task_factory  # noqa: E402
from clipmath.train.config import (  # noqa: E402
    AdapterConfig,
    CombinerConfig,
    FinetuneConfig,
    OtiConfig,
    PhiConfig,
)
from clipmath.train.features import FeatureCache  # noqa: E402
from clipmath.train.loop import fit, seed_everything  # noqa: E402
from clipmath.train.searle import phi_task_factory, run_oti  # noqa: E402
from clipmath.train.synthetic import make_shapes_dataset, make_views_dataset  # noqa: E402
from clipmath.train.validate import RetrievalValidator  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.test_train_learning import PHOTOS  # noqa: E402

GALLERY = REPO / "examples" / "gallery"


def row(name, model, steps, first, last, before, after, throughput, unit="ex/s"):
    untrained = f"{before['recall@1']:.3f} / {before['mean_rank']:.2f}"
    trained = f"{after['recall@1']:.3f} / {after['mean_rank']:.2f}"
    speed = f"{throughput:.1f} {unit}"
    return f"| {name} | {model} | {steps} | {first:.3f} → {last:.3f} | {untrained} | {trained} | {speed} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="offline-imagenet-minilm")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = load_encoder(args.model)
    label = encoder.info.label()
    work = Path(tempfile.mkdtemp(prefix="clipmath-train-bench-"))
    lines = [
        f"model: {label}; torch threads: {torch.get_num_threads()}",
        "",
        "| method | model | steps | loss first → last epoch | untrained R@1 / mean rank | trained R@1 / mean rank"
        " | training throughput |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    shapes = make_shapes_dataset(work / "shapes", shapes=4, colours=4, instances=3)
    cache = FeatureCache(encoder, progress=False)
    cache.images(shapes.images())
    held_out = range(2, 3)

    # Combiner
    triplets, gallery = shapes.triplets(held_out), shapes.images(held_out)
    validator = RetrievalValidator.from_triplets(encoder, triplets, gallery, cache=cache)
    factory = combiner_task_factory(encoder, shapes.triplets(range(2)), cache)
    config = CombinerConfig(
        epochs=15, batch_size=32, lr=1e-3, projection_dim=256, hidden_dim=512, save_every=15, progress=False
    )
    seed_everything(config.seed)
    before = validator(factory(config).composer())
    result = fit(factory, config, work / "combiner")
    after = validator(get_composer("combiner", encoder, str(work / "combiner")))
    lines.append(
        row(
            "combiner",
            args.model,
            result.history[-1]["steps"],
            result.first_loss,
            result.last_loss,
            before,
            after,
            result.examples_per_second,
        )
    )
    lines[-1] += f"  (sum baseline R@1 {validator(ElementwiseSum())['recall@1']:.3f})"

    # SIMAT heads
    queries, targets = shapes.delta_queries(held_out)
    validator = RetrievalValidator(encoder, queries, targets, shapes.images(held_out), cache=cache)
    factory = adapter_task_factory(encoder, shapes.captioned(range(2)), cache)
    config = AdapterConfig(epochs=40, batch_size=32, lr=1e-2, save_every=40, progress=False)
    before = validator(AdaptedDelta.from_heads(AdaptationHeads(encoder.dim)))
    result = fit(factory, config, work / "heads")
    after = validator(get_composer("adapted-delta", encoder, str(work / "heads")))
    lines.append(
        row(
            "adapter (adapted-delta)",
            args.model,
            result.history[-1]["steps"],
            result.first_loss,
            result.last_loss,
            before,
            after,
            result.examples_per_second,
        )
    )

    # OTI and phi
    views = make_views_dataset(work / "views", {k: GALLERY / v for k, v in PHOTOS.items()})
    cache.images(views.gallery() + views.training_views())
    validator = RetrievalValidator.from_triplets(encoder, views.triplets(), views.gallery(), cache=cache)
    concepts = ConceptVocabulary.load()
    concepts = ConceptVocabulary({c: concepts.phrases[c] for c in concepts.concepts[:12]})
    config = OtiConfig(steps=20, ema_decay=0.8, batch_size=16, top_k=3, progress=False)
    references = [t.reference for t in views.triplets()]
    oti = run_oti(encoder, references, config, work / "oti", concepts, cache)
    before = validator(OtiComposer(torch.zeros(0, 1), torch.zeros(0, encoder.dim), InversionSettings(steps=0)))
    after = validator(get_composer("oti", encoder, str(work / "oti")))
    lines.append(
        row(
            "oti",
            args.model,
            config.steps,
            oti.first_loss,
            oti.last_loss,
            before,
            after,
            oti.examples_per_second * config.steps,
            "image-steps/s",
        )
    )
    lines[-1] += " (loss: first → last step)"

    teacher = OtiConfig(steps=12, ema_decay=0.7, batch_size=32, lambda_reg=0.0, progress=False)
    run_oti(encoder, views.training_views(), teacher, work / "teacher", None, cache)
    factory = phi_task_factory(encoder, work / "teacher")
    config = PhiConfig(epochs=25, batch_size=16, lr=1e-3, dropout=0.1, lambda_reg=0.0, save_every=25, progress=False)
    seed_everything(config.seed)
    before = validator(factory(config).composer())
    result = fit(factory, config, work / "phi")
    after = validator(get_composer("searle", encoder, str(work / "phi")))
    lines.append(
        row(
            "phi (searle)",
            args.model,
            result.history[-1]["steps"],
            result.first_loss,
            result.last_loss,
            before,
            after,
            result.examples_per_second,
        )
    )
    config = PhiConfig(epochs=2, batch_size=16, lr=1e-3, lambda_reg=0.75, top_k=3, save_every=2, progress=False)
    factory = phi_task_factory(encoder, work / "teacher", concepts)
    result = fit(factory, config, work / "phi-reg")
    lines.append(
        f"| phi with concept regulariser | {args.model} | {result.history[-1]['steps']} | "
        f"{result.first_loss:.3f} → {result.last_loss:.3f} | | | {result.examples_per_second:.1f} ex/s |"
    )

    # Fine-tuning (tiny random CLIP: plumbing numbers)
    tiny = load_encoder("tiny-random-clip")
    validator = RetrievalValidator.from_triplets(tiny, triplets, gallery, reencode=True)
    before = validator(ElementwiseSum())
    config = FinetuneConfig(epochs=10, batch_size=32, lr=1e-3, progress=False)
    result = fit(lambda c: FinetuneTask(tiny, c, shapes.triplets(range(2))), config, work / "finetune")
    after = validator(ElementwiseSum())
    lines.append(
        row(
            "finetune (then sum)",
            "tiny-random-clip",
            result.history[-1]["steps"],
            result.first_loss,
            result.last_loss,
            before,
            after,
            result.examples_per_second,
        )
    )

    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
