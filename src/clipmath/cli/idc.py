"""Image-difference captioning commands: ``clipmath diff-caption``, ``clipmath data make-change-set`` and
(training: ``clipmath train idc-adapt`` and ``idc-caption``, registered in :data:`clipmath.train.TRAINERS`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.decoder_options import (
    decoder_fields,
    decoder_names,
    decoder_options,
    register_with_decoder_options,
)
from clipmath.cli.options import DeviceOpt, JsonOpt, ModelOpt, QuietOpt, ThreadsOpt
from clipmath.cli.output import emit, status
from clipmath.errors import ClipmathError

app = typer.Typer()
data_app = typer.Typer(name="data", help="Make datasets.", no_args_is_help=True)
app.add_typer(data_app)

_DIFF = """Examples:

  clipmath diff-caption before.png after.png --checkpoint runs/idc-caption

  clipmath diff-caption before.png after.png --model openai/clip-vit-base-patch32 --lm gpt2 --json

  clipmath diff-caption before.png after.png --decoder memory --corpus examples/caption-corpus/coco_captions.txt

  clipmath diff-caption before.png after.png --decoder decap --checkpoint runs/decap
"""


def diff_caption(
    before: str, after: str, checkpoint: Optional[Path], store: Optional[Path], lm: str, decoder: Optional[str],
    prompt: str, before_weight: float, after_weight: float, model: Optional[str], device: str,
    threads: Optional[int], as_json: bool, **given: Any,
) -> None:  # fmt: skip
    """Say what changed from BEFORE to AFTER: a trained CLIP4IDC captioner with --checkpoint, zero-shot otherwise (a
    caption decoder on the embedding difference; --decoder decap reads its own --checkpoint)."""
    from clipmath.caption.difference import (
        DEFAULT_PROMPT,
        TrainedDifferenceCaptioner,
        zero_shot_decoder,
        zero_shot_difference,
    )
    from clipmath.cli.runtime import load_model

    spec = zero_shot_decoder(decoder)
    checkpoint_field = _ALL_OPTIONS["checkpoint"].fields.get(spec.name)
    if checkpoint is not None and not checkpoint_field and (decoder or any(v is not None for v in given.values())):
        raise ClipmathError(
            "--checkpoint without --decoder decap is a trained difference captioner, which takes no --decoder nor "
            "decoder options"
        )
    fields = decoder_fields(_DECODER_OPTIONS, spec, given)
    if checkpoint is not None and checkpoint_field:
        fields[checkpoint_field] = str(checkpoint)
        checkpoint = None
    paths = [_image_path(name, store) for name in (before, after)]
    if checkpoint is not None:
        encoder = load_model(model, device, threads=threads, as_json=True) if model else None
        result = TrainedDifferenceCaptioner.load(checkpoint, encoder, device=device).caption(*paths)
    else:
        from clipmath.caption import load_language_model

        encoder = load_model(model or "auto", device, threads=threads, as_json=True)
        language_model = load_language_model(lm, device=device) if spec.uses_lm else None
        options = {"weights": (before_weight, after_weight), "prompt": prompt or DEFAULT_PROMPT, **fields}
        result = zero_shot_difference(paths[0], paths[1], encoder, language_model, decoder=spec.name, **options)
    status(f"model: {result.model}", as_json)
    emit({"before": str(paths[0]), "after": str(paths[1]), **result.as_dict()}, as_json, lambda: [result.text])


def _register_diff_caption() -> None:
    """``clipmath diff-caption``: its own options, then one per decoder option (``--checkpoint`` and ``--prompt``
    are its own, and fill the decoder's field of that name when it has one)."""
    own: dict[str, tuple[Any, Any]] = {
        "before": (Annotated[str, typer.Argument(
            help="The 'before' image: a file, or a gallery id with --store.")], inspect.Parameter.empty),
        "after": (Annotated[str, typer.Argument(
            help="The 'after' image: a file, or a gallery id with --store.")], inspect.Parameter.empty),
        "checkpoint": (Annotated[Optional[Path], typer.Option(help="A trained captioner (`clipmath train "
            "idc-caption`); with --decoder decap, the DeCap decoder (`clipmath train decap`).")], None),
        "store": (Annotated[Optional[Path], typer.Option(
            help="Gallery store whose ids BEFORE/AFTER may name.")], None),
        "lm": (Annotated[str, typer.Option("--lm", help="Zero-shot: the language model of the decoders that use "
            "one (auto, smollm2-135m, a folder).")], "auto"),
        "decoder": (Annotated[Optional[str], typer.Option(
            help=f"Zero-shot: caption decoder ({decoder_names()}; default magic).")], None),
        "prompt": (Annotated[str, typer.Option(
            help="Zero-shot: the text the caption continues (decoders with a language model).")], "Now there is a"),
        "before_weight": (Annotated[float, typer.Option(help="Zero-shot: weight of the 'before' embedding.")], 1.0),
        "after_weight": (Annotated[float, typer.Option(help="Zero-shot: weight of the 'after' embedding.")], 1.0),
        "model": (ModelOpt, None), "device": (DeviceOpt, "cpu"), "threads": (ThreadsOpt, None),
        "as_json": (JsonOpt, False),
    }  # fmt: skip
    register_with_decoder_options(app, "diff-caption", diff_caption, own, _DECODER_OPTIONS, _DIFF)


_ALL_OPTIONS = decoder_options()
_DECODER_OPTIONS = decoder_options(skip=("checkpoint", "cond_text"))  # --checkpoint and --prompt are our own
_register_diff_caption()


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
