"""``clipmath caption`` (a caption decoder on an image or an expression; its options generated from the decoders'
options dataclasses) and ``clipmath eval-captions`` (COCO metrics)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.decoder_options import (
    decoder_fields,
    decoder_names,
    decoder_options,
    register_with_decoder_options,
)
from clipmath.cli.options import DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, ThreadsOpt
from clipmath.cli.output import emit, status
from clipmath.cli.runtime import load_model
from clipmath.errors import ClipmathError

app = typer.Typer()

_EXAMPLES = """Examples:

  clipmath caption --image photo.jpg

  clipmath caption --expr '+woman.jpg +king.jpg -man.jpg' --preset arithmetic

  clipmath caption --image sign.jpg --preset ocr --lm smollm2-135m --json

  clipmath caption --image photo.jpg --decoder magic        # gradient-free MAGIC decoding: seconds, not minutes

  clipmath caption --image photo.jpg --decoder memory --corpus examples/caption-corpus/coco_captions.txt

  clipmath caption --expr '+woman.jpg +king.jpg -man.jpg' --decoder decap --checkpoint runs/decap
"""


def caption(
    image: Optional[str], expr: Optional[str], preset: Optional[str], decoder: str, lm: str, model: Optional[str],
    device: str, dtype: str, threads: Optional[int], as_json: bool, **given: Any,
) -> None:  # fmt: skip
    """Caption an image or an image/text expression: an LM decoder guided by the encoder (ZeroCap, MAGIC), the
    nearest captions of a corpus (memory), or a decoder trained on text alone (DeCap)."""
    from dataclasses import replace

    from clipmath.caption import DECODERS, load_language_model
    from clipmath.compose import CompositionQuery, get_composer, parse_expression

    if (image is None) == (expr is None):
        raise ClipmathError("give exactly one of --image or --expr")
    spec = DECODERS.get(decoder)
    config = replace(spec.preset_options(preset), **decoder_fields(_DECODER_OPTIONS, spec, given))
    terms = parse_expression(expr) if expr else []
    encoder = load_model(model, device, dtype=dtype, threads=threads, as_json=True)
    query = CompositionQuery(terms=terms) if expr else CompositionQuery(reference=image)
    target = get_composer("expr" if expr else "image").compose(encoder, [query])[0]
    language_model = load_language_model(lm, device=device) if spec.uses_lm else None
    lm_label = language_model.label() if language_model is not None else "none"
    status(f"model: {encoder.info.label()} · language model: {lm_label}", as_json)
    captions = spec.create(language_model, encoder, config).caption(target, progress=not as_json)
    payload = {
        "model": encoder.info.label(),
        "language_model": lm_label,
        "decoder": spec.name,
        "config": asdict(config),
        "seconds": captions[0].seconds,
        "captions": [{"text": c.full_text, "clip_score": c.clip_score, "lm_score": c.lm_score} for c in captions],
    }
    emit(payload, as_json, lambda: [f"{c.clip_score:.3f}  {c.full_text}" for c in captions])


def _register_caption() -> None:
    """``clipmath caption``: its own options, then one per decoder option (read from the options dataclasses)."""
    names = decoder_names()
    own: dict[str, tuple[Any, Any]] = {
        "image": (Annotated[Optional[str], typer.Option("--image", "-i", help="Image to caption.")], None),
        "expr": (Annotated[Optional[str], typer.Option(
            "--expr", "-e", help="Caption an expression: '+woman.jpg +king.jpg -man.jpg' (ZeroCap arithmetic).")],
            None),
        "preset": (Annotated[Optional[str], typer.Option(
            help="A decoder's named option set (ZeroCap: caption, arithmetic, real-world, ocr); options below "
            "override it.")], None),
        "decoder": (Annotated[str, typer.Option(help=f"Caption decoder: {names}.")], "zerocap"),
        "lm": (Annotated[str, typer.Option("--lm", help="Language model of the decoders that use one: auto, "
               "smollm2-135m, gpt2, a folder.")],
               "auto"),
        "model": (ModelOpt, "auto"), "device": (DeviceOpt, "cpu"), "dtype": (DtypeOpt, "float32"),
        "threads": (ThreadsOpt, None), "as_json": (JsonOpt, False),
    }  # fmt: skip
    register_with_decoder_options(app, "caption", caption, own, _DECODER_OPTIONS, _EXAMPLES)


_DECODER_OPTIONS = decoder_options()
_register_caption()


@app.command(
    "eval-captions",
    epilog="Examples:\n\n  clipmath eval-captions predictions.json --no-meteor --json\n\n"
    "  clipmath eval-captions results.json --references gt/spot_total_change_captions_reformat.json",
)
def eval_captions(
    predictions: Annotated[Path, typer.Argument(help="JSON of predictions with their references.")],
    references: Annotated[
        Optional[Path],
        typer.Option(help='A COCO-format reference file: PREDICTIONS is then [{"image_id", "caption"}, ...].'),
    ] = None,
    no_meteor: Annotated[bool, typer.Option("--no-meteor", help="Skip METEOR (needs Java).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score captions with the COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr; PTB tokenisation)."""
    from clipmath.caption import score_caption_file

    scores = score_caption_file(predictions, meteor=not no_meteor, references=references)
    percent = scores.percent()

    def render():
        yield f"{scores.count} captions scored ({predictions})"
        yield from (f"{name:>8}: {'skipped' if v is None else f'{v:.2f}'}" for name, v in percent.items())

    emit({"count": scores.count, "percent": percent}, as_json, render)
