"""Image-difference captioning commands: ``clipmath diff-caption``, ``clipmath data make-change-set`` and
``clipmath train idc --stage adapt|caption`` (registered on the train group by :func:`register_train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli.options import MULTI_VALUE, DeviceOpt, JsonOpt, ModelOpt, QuietOpt, ThreadsOpt, option_values
from clipmath.cli.output import emit, status
from clipmath.errors import ClipmathError

app = typer.Typer()
data_app = typer.Typer(name="data", help="Make datasets.", no_args_is_help=True)
app.add_typer(data_app)

_DIFF = """Examples:

  clipmath diff-caption before.png after.png --checkpoint runs/idc-caption

  clipmath diff-caption before.png after.png --model openai/clip-vit-base-patch32 --lm gpt2 --json
"""


@app.command("diff-caption", epilog=_DIFF)
def diff_caption(
    before: Annotated[str, typer.Argument(help="The 'before' image: a file, or a gallery id with --store.")],
    after: Annotated[str, typer.Argument(help="The 'after' image: a file, or a gallery id with --store.")],
    checkpoint: Annotated[
        Optional[Path], typer.Option(help="A trained captioner (`clipmath train idc --stage caption`).")
    ] = None,
    store: Annotated[Optional[Path], typer.Option(help="Gallery store whose ids BEFORE/AFTER may name.")] = None,
    lm: Annotated[
        str, typer.Option("--lm", help="Zero-shot: the language model (auto, smollm2-135m, a folder).")
    ] = "auto",
    decoder: Annotated[Optional[str], typer.Option(help="Zero-shot: caption decoder (magic, zerocap).")] = None,
    prompt: Annotated[str, typer.Option(help="Zero-shot: the text the caption continues.")] = "Now there is a",
    before_weight: Annotated[float, typer.Option(help="Zero-shot: weight of the 'before' embedding.")] = 1.0,
    after_weight: Annotated[float, typer.Option(help="Zero-shot: weight of the 'after' embedding.")] = 1.0,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Say what changed from BEFORE to AFTER: a trained CLIP4IDC captioner with --checkpoint, zero-shot otherwise."""
    from clipmath.caption.difference import DEFAULT_PROMPT, TrainedDifferenceCaptioner, zero_shot_difference
    from clipmath.cli.runtime import load_model

    paths = [_image_path(name, store) for name in (before, after)]
    if checkpoint is not None:
        encoder = load_model(model, device, threads=threads, as_json=True) if model else None
        result = TrainedDifferenceCaptioner.load(checkpoint, encoder, device=device).caption(*paths)
    else:
        from clipmath.caption import load_language_model

        encoder = load_model(model or "auto", device, threads=threads, as_json=True)
        language_model = load_language_model(lm, device=device)
        options = {"decoder": decoder, "weights": (before_weight, after_weight), "prompt": prompt or DEFAULT_PROMPT}
        result = zero_shot_difference(paths[0], paths[1], encoder, language_model, **options)
    status(f"model: {result.model}", as_json)
    emit({"before": str(paths[0]), "after": str(paths[1]), **result.as_dict()}, as_json, lambda: [result.text])


def _image_path(name: str, store: Optional[Path]) -> Path:
    path = Path(name)
    if path.exists() or store is None:
        return path
    from clipmath.store import Gallery

    with Gallery.open(store) as gallery:
        if gallery.record(name) is None:
            raise ClipmathError(f"'{name}' is neither a file nor an image id of {store}")
        return gallery.root / name


@data_app.command(
    "make-change-set", epilog="Example:\n\n  clipmath data make-change-set data/changes --pairs 600 --seed 0"
)
def make_change_set_command(
    folder: Annotated[Path, typer.Argument(help="Folder to write (CLEVR-Change layout).")],
    pairs: Annotated[int, typer.Option(min=3, help="Scene ids; each gives a change pair and a distractor pair.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    image_size: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 64,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Render a change dataset of 2D shapes in CLEVR-Change's layout (color, texture, add, drop, move, distractors)."""
    import json

    from clipmath.data.change_set import make_change_set

    root = make_change_set(folder, pairs=pairs, seed=seed, image_size=image_size, progress=not (quiet or as_json))
    splits = json.loads((root / "splits.json").read_text())
    payload = {"folder": str(root), "ids": pairs, "splits": {k: len(v) for k, v in splits.items()}}
    emit(
        payload,
        as_json,
        lambda: [
            f"{root}: {pairs} scenes ({', '.join(f'{k} {len(v)}' for k, v in splits.items())}),"
            " each a change pair and a no-change pair"
        ],
    )


_TRAIN = """CLIP4IDC on image pairs: stage 1 (--stage adapt) aligns pair embeddings with difference captions; stage 2
(--stage caption, --init-from a stage-1 checkpoint) trains the caption decoder. Data: --dataset clevr-change or
spot-the-diff in its release layout (or a folder from `clipmath data make-change-set`).

Examples:

  clipmath train idc --stage adapt --path data/clevr_change -o runs/idc-adapt --model openai/clip-vit-base-patch32

  clipmath train idc --stage caption --path data/clevr_change -o runs/idc-caption --init-from runs/idc-adapt

  clipmath train idc --stage caption --dataset spot-the-diff --path data/spot-the-diff -o runs/spot --seeds 1 2 3
"""


def train_idc(
    ctx: typer.Context,
    stage: Annotated[str, typer.Option(help="adapt (stage 1) or caption (stage 2).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint folder (an unfinished run is resumed).")],
    path: Annotated[Path, typer.Option(help="Dataset folder.")],
    dataset: Annotated[str, typer.Option(help="clevr-change or spot-the-diff.")] = "clevr-change",
    init_from: Annotated[Optional[Path], typer.Option(help="Stage 2: the stage-1 checkpoint to start from.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs (CLIP4IDC: adapt 12, caption 50).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Pairs per step (adapt 128, caption 16).")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Learning rate of new parts (1e-4).")] = None,
    coef_lr: Annotated[Optional[float], typer.Option(min=0.0, help="LR factor of CLIP's pretrained weights.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many steps in all.")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option("--seeds", help="One run per seed: mean ± std.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations (CUDA only).")] = False,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an unfinished run.")] = True,
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from clipmath.cli.runtime import load_model
    from clipmath.cli.training import run_training
    from clipmath.train import idc

    if stage not in ("adapt", "caption"):
        raise ClipmathError(f"--stage is adapt or caption, not {stage!r}")
    if init_from is not None and stage != "caption":
        raise ClipmathError("--init-from goes with --stage caption")
    seed_values = option_values(ctx, seeds, "--seeds", int, "integers")
    train, val = (_load_pairs(dataset, path, split) for split in ("train", "val"))
    encoder = load_model(model, device, dtype="float32", threads=threads, as_json=as_json)  # AMP does the rest
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "coef_lr": coef_lr, "max_steps": max_steps}
    common = {k: v for k, v in given.items() if v is not None}
    common.update(
        seed=seed, device=device, gradient_checkpointing=gradient_checkpointing, progress=not (quiet or as_json)
    )
    if stage == "adapt":
        config = idc.IdcAdaptConfig(**common, monitor="text->pair R@1")
        factory, validate = idc.adapt_task_factory(encoder, train), idc.retrieval_validator(val)
    else:
        config = idc.IdcCaptionConfig(**common, init_from=str(init_from) if init_from else None, monitor="CIDEr")
        factory, validate = idc.caption_task_factory(encoder, train), idc.caption_validator(val)
    params = {"output": output, "resume": resume, "as_json": as_json}
    run_training(factory, config, params, seed_values, validate if val else None, encoder)


def _load_pairs(dataset: str, path: Path, split: str) -> list:
    if dataset == "clevr-change":
        from clipmath.data.clevr_change import load_clevr_change

        return load_clevr_change(path, split).pairs
    if dataset == "spot-the-diff":
        from clipmath.data.spot_the_diff import load_spot_the_diff

        return load_spot_the_diff(path, split).pairs
    raise ClipmathError(f"--dataset is clevr-change or spot-the-diff, not {dataset!r}")


def register_train(train_app: typer.Typer) -> None:
    """Add ``idc`` to the ``clipmath train`` group."""
    train_app.command("idc", help=_TRAIN, context_settings=MULTI_VALUE)(train_idc)
