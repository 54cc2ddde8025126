"""``clipmath train adapter|finetune|combiner|oti|phi``: one command per learned compose method.

Shared options and the option → config mapping live in :mod:`clipmath.cli.training`; defaults come from the
config dataclasses (``config_default(CombinerConfig, "epochs")``), never restated here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli.idc import register_train as register_idc_training
from clipmath.cli.options import MULTI_VALUE, config_default
from clipmath.cli.output import emit
from clipmath.cli.training import (
    LOOP,
    RUN,
    VALIDATION,
    DropoutOpt,
    HiddenDimOpt,
    ImagesRootOpt,
    LambdaRegOpt,
    LogitScaleOpt,
    OutputOpt,
    PromptOpt,
    TopKOpt,
    TripletsOpt,
    benchmark_validator,
    build_config,
    run_training,
    seed_list,
    train_command,
    train_encoder,
    triplet_validator,
    validator,
)
from clipmath.errors import ClipmathError
from clipmath.train.config import AdapterConfig, CombinerConfig, FinetuneConfig, OtiConfig, PhiConfig

app = typer.Typer(
    name="train",
    help="Train the learned compose methods. Checkpoints are folders of safetensors + JSON (config inside); "
    "use them with `clipmath search --method combiner|adapted-delta|searle|oti --checkpoint PATH`.",
    no_args_is_help=True,
)

_ADAPTER = """SIMAT adaptation heads for --method adapted-delta: linear image and text heads on frozen features,
trained on image–caption pairs with a symmetric contrastive loss, each head on its own modality.

Examples:

  clipmath train adapter --coco data/coco --coco-split train2017 -o runs/heads

  clipmath train adapter --images imgs/ --captions captions.tsv -o runs/heads --val-dataset simat --val-path data/SIMAT
"""


_ADAPTER_SHARED = (*LOOP, *RUN, "val_images", "val_dataset", "val_path", "val_split", "cache")


@train_command(app, "adapter", _ADAPTER_SHARED, _ADAPTER, context_settings=MULTI_VALUE)
def train_adapter(
    ctx: typer.Context,
    output: OutputOpt,
    images: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder of training images (with --captions), or COCO image folder "
            "(with --coco; default ROOT/<split>)."
        ),
    ] = None,
    captions: Annotated[
        Optional[Path],
        typer.Option(help='Captions of --images: JSON {"file.jpg": [captions]} or TSV file<TAB>caption.'),
    ] = None,
    coco: Annotated[
        Optional[Path],
        typer.Option(help="COCO captions instead: a root holding annotations/captions_<split>.json, or that file."),
    ] = None,
    coco_split: Annotated[Optional[str], typer.Option(help="COCO split, e.g. train2017.")] = None,
    tau: Annotated[float, typer.Option(min=1e-4, help="Contrastive temperature τ.")] = config_default(
        AdapterConfig, "tau"
    ),
    val_captions: Annotated[
        Optional[Path],
        typer.Option(help="Held-out captions file (JSON or TSV): caption→image Recall@K after every epoch."),
    ] = None,
) -> None:
    from clipmath.compose.adapted_delta import AdaptedDelta
    from clipmath.train.adapter import adapter_task_factory
    from clipmath.train.data import read_captions, read_coco_captions
    from clipmath.train.features import FeatureCache
    from clipmath.train.validate import CaptionValidator

    seeds = seed_list(ctx)
    if (coco is None) == (captions is None):
        raise ClipmathError("give either --images DIR --captions FILE, or --coco PATH")
    if captions is not None and images is None:
        raise ClipmathError("--captions needs --images DIR")
    data = read_coco_captions(coco, images, coco_split) if coco else read_captions(images, captions)
    encoder = train_encoder(ctx.params)
    validate = benchmark_validator(encoder, ctx.params, AdaptedDelta.needs, "adapter", val_captions is not None)
    if val_captions is not None:
        if ctx.params["val_images"] is None:
            raise ClipmathError("--val-captions needs --val-images DIR")
        validate = CaptionValidator(encoder, read_captions(ctx.params["val_images"], val_captions))
    config = build_config("adapter", ctx.params)
    factory = adapter_task_factory(encoder, data, FeatureCache(encoder, ctx.params["cache"], progress=config.progress))
    run_training(factory, config, ctx.params, seeds, validate, encoder)


_FINETUNE = """CLIP4Cir stage 1: fine-tune the CLIP towers so that img(reference) + text(caption) finds img(target).
Writes a model folder: index the gallery and train the Combiner with --model OUTPUT.

Example:

  clipmath train finetune --triplets train.json -o runs/clip-ft --model openai/clip-vit-base-patch32 --epochs 5
"""


@train_command(app, "finetune", (*LOOP, *VALIDATION, *RUN), _FINETUNE, context_settings=MULTI_VALUE)
def train_finetune(
    ctx: typer.Context,
    output: OutputOpt,
    triplets: TripletsOpt,
    images: ImagesRootOpt = None,
    towers: Annotated[str, typer.Option(help="Which towers to fine-tune: both, image or text.")] = config_default(
        FinetuneConfig, "towers"
    ),
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute activations in the backward pass (less memory, slower).")
    ] = config_default(FinetuneConfig, "gradient_checkpointing"),
    logit_scale: LogitScaleOpt = config_default(FinetuneConfig, "logit_scale"),
) -> None:
    from clipmath.train.clip4cir import FinetuneTask
    from clipmath.train.data import read_triplets

    seeds = seed_list(ctx)
    if output.suffix == ".safetensors":
        raise ClipmathError("a fine-tuned model is a folder: give --output a folder path")
    data = read_triplets(triplets, images)
    encoder = train_encoder(ctx.params)
    validate = validator(encoder, ctx.params, "finetune", reencode=True)
    config = build_config("finetune", ctx.params)
    if seeds and len(seeds) > 1:
        raise ClipmathError("fine-tuning changes the model in place: run one seed per command")
    run_training(lambda c: FinetuneTask(encoder, c, data), config, ctx.params, seeds, validate, encoder)


_COMBINER = """CLIP4Cir stage 2: the Combiner network for --method combiner, trained on cached features of a frozen
encoder (the fine-tuned one from `clipmath train finetune`, or any other).

Examples:

  clipmath train combiner --triplets train.json -o runs/combiner --val-triplets val.json

  clipmath train combiner --triplets train.json -o runs/combiner --seeds 1 2 3 --val-dataset cirr --val-path data/CIRR
"""


@train_command(app, "combiner", (*LOOP, *VALIDATION, *RUN, "cache"), _COMBINER, context_settings=MULTI_VALUE)
def train_combiner(
    ctx: typer.Context,
    output: OutputOpt,
    triplets: TripletsOpt,
    images: ImagesRootOpt = None,
    projection_dim: Annotated[
        Optional[int], typer.Option(min=1, help="Width of the two input projections (default 4 × the embedding size).")
    ] = config_default(CombinerConfig, "projection_dim"),
    hidden_dim: HiddenDimOpt = config_default(CombinerConfig, "hidden_dim"),
    dropout: DropoutOpt = config_default(CombinerConfig, "dropout"),
    logit_scale: LogitScaleOpt = config_default(CombinerConfig, "logit_scale"),
) -> None:
    from clipmath.train.clip4cir import combiner_task_factory
    from clipmath.train.data import read_triplets
    from clipmath.train.features import FeatureCache

    seeds = seed_list(ctx)
    data = read_triplets(triplets, images)
    encoder = train_encoder(ctx.params)
    config = build_config("combiner", ctx.params)
    features = FeatureCache(encoder, ctx.params["cache"], progress=config.progress)
    factory = combiner_task_factory(encoder, data, features)
    validate = benchmark_validator(
        encoder, ctx.params, ("reference", "text"), "combiner", ctx.params["val_triplets"] is not None
    )
    if validate is None:
        given = (ctx.params[name] for name in ("val_triplets", "val_images", "val_gallery"))
        validate = triplet_validator(encoder, *given)
        if validate is not None:
            validate.cache = features
    run_training(factory, config, ctx.params, seeds, validate, encoder)


_OTI = """SEARLE optimisation-based textual inversion: one pseudo-word token per image, for --method oti (other
images are inverted at query time) and as the teacher of `clipmath train phi`.

Example:

  clipmath train oti --images data/CIRR/dev -o runs/oti --concepts concepts.json
"""


@train_command(app, "oti", ("lr", "weight_decay", *VALIDATION, *RUN, "cache"), _OTI)
def train_oti(
    ctx: typer.Context,
    output: OutputOpt,
    images: Annotated[
        Path,
        typer.Option(
            "--images", help="Folder of images to invert (searched recursively), e.g. a benchmark's reference images."
        ),
    ],
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps per image.")] = config_default(
        OtiConfig, "steps"
    ),
    batch_size: Annotated[int, typer.Option(min=1, help="Images inverted together.")] = config_default(
        OtiConfig, "batch_size"
    ),
    ema_decay: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Decay of the exponential moving average of the token (the result).")
    ] = config_default(OtiConfig, "ema_decay"),
    lambda_cos: Annotated[
        float, typer.Option(min=0.0, help="Weight of the image–prompt cosine loss.")
    ] = config_default(OtiConfig, "lambda_cos"),
    lambda_reg: LambdaRegOpt = config_default(OtiConfig, "lambda_reg"),
    top_k: TopKOpt = config_default(OtiConfig, "top_k"),
    concepts: Annotated[
        Optional[Path],
        typer.Option(
            help="Concept vocabulary: JSON {concept: [phrases that contain it]} or text, one concept per line "
            "(default: a small built-in list)."
        ),
    ] = None,
    template: Annotated[str, typer.Option(help="Prompt whose feature must match the image's.")] = config_default(
        OtiConfig, "template"
    ),
    prompt: PromptOpt = config_default(OtiConfig, "prompt"),
    save_every: Annotated[int, typer.Option(min=1, help="Batches between checkpoint writes.")] = config_default(
        OtiConfig, "save_every"
    ),
) -> None:
    from clipmath.compose.searle import ConceptVocabulary
    from clipmath.train.data import image_files
    from clipmath.train.features import FeatureCache
    from clipmath.train.searle import run_oti

    files = image_files(images)
    vocabulary = ConceptVocabulary.load(concepts) if lambda_reg else None
    encoder = train_encoder(ctx.params)
    config = build_config("oti", ctx.params)
    validate = validator(encoder, ctx.params, "oti")
    features = FeatureCache(encoder, ctx.params["cache"], progress=config.progress)
    result = run_oti(encoder, files, config, output, vocabulary, features, validate, ctx.params["resume"])
    payload = {
        "model": encoder.info.label(),
        "checkpoint": str(result.checkpoint),
        "images": result.images,
        "inverted": result.inverted,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
        "images_per_s": result.examples_per_second,
        "metrics": result.metrics,
    }

    def render():
        yield (
            f"inverted {result.inverted} image(s) ({result.images} in the checkpoint) at "
            f"{result.examples_per_second:.2f} images/s; loss {result.first_loss:.4f} → {result.last_loss:.4f}"
        )
        if result.metrics:
            yield "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        yield f"checkpoint: {result.checkpoint}"

    emit(payload, ctx.params["as_json"], render)


_PHI = """SEARLE's textual-inversion network phi for --method searle: image feature → pseudo-word token,
distilled from OTI tokens with the concept-phrase regulariser.

Example:

  clipmath train phi --oti runs/oti -o runs/phi --epochs 50 --val-triplets val.json
"""


@train_command(app, "phi", (*LOOP, *VALIDATION, *RUN), _PHI, context_settings=MULTI_VALUE)
def train_phi(
    ctx: typer.Context,
    output: OutputOpt,
    oti: Annotated[
        Path,
        typer.Option(
            "--oti",
            help="OTI checkpoint (`clipmath train oti`) whose tokens phi learns to predict from the image features.",
        ),
    ],
    concepts: Annotated[
        Optional[Path], typer.Option(help="Concept vocabulary for the regulariser (default: the one the OTI run used).")
    ] = None,
    hidden_dim: HiddenDimOpt = config_default(PhiConfig, "hidden_dim"),
    dropout: DropoutOpt = config_default(PhiConfig, "dropout"),
    lambda_distil: Annotated[float, typer.Option(min=0.0, help="Weight of the distillation loss.")] = config_default(
        PhiConfig, "lambda_distil"
    ),
    lambda_reg: LambdaRegOpt = config_default(PhiConfig, "lambda_reg"),
    temperature: Annotated[
        float, typer.Option(min=1e-4, help="Temperature of the distillation loss.")
    ] = config_default(PhiConfig, "temperature"),
    top_k: TopKOpt = config_default(PhiConfig, "top_k"),
    prompt: PromptOpt = config_default(PhiConfig, "prompt"),
) -> None:
    from clipmath.compose.searle import ConceptVocabulary
    from clipmath.train.searle import phi_task_factory

    seeds = seed_list(ctx)
    encoder = train_encoder(ctx.params)
    config = build_config("phi", ctx.params)
    vocabulary = ConceptVocabulary.load(concepts) if concepts else None
    factory = phi_task_factory(encoder, oti, vocabulary)
    validate = validator(encoder, ctx.params, "phi")
    run_training(factory, config, ctx.params, seeds, validate, encoder)


register_idc_training(app)  # clipmath train idc (clipmath.cli.idc)

from clipmath.cli import caption_lm as _caption_lm  # noqa: E402,F401 - registers `train caption-lm` (caption helper)
