"""``clipmath caption`` (a caption decoder on an image or an expression; its options generated from the decoders'
options dataclasses) and ``clipmath eval-captions`` (COCO metrics)."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, ThreadsOpt, flag_of
from clipmath.cli.output import emit, status
from clipmath.cli.runtime import load_model
from clipmath.errors import ClipmathError
from clipmath.options import field_help, settings_fields, value_type

app = typer.Typer()

_EXAMPLES = """Examples:

  clipmath caption --image photo.jpg

  clipmath caption --expr '+woman.jpg +king.jpg -man.jpg' --preset arithmetic

  clipmath caption --image sign.jpg --preset ocr --lm smollm2-135m --json

  clipmath caption --image photo.jpg --decoder magic        # gradient-free MAGIC decoding: seconds, not minutes

  clipmath caption --image photo.jpg --decoder memory --corpus examples/caption-corpus/coco_captions.txt

  clipmath caption --expr '+woman.jpg +king.jpg -man.jpg' --decoder decap --checkpoint runs/decap
"""


def _decoder_options() -> dict[str, tuple[str, Any, dict[str, str]]]:
    """Every decoder option, by parameter name: (flag, annotation, {decoder: its field}); an option two decoders
    share (the prompt, the length) is one option that fills each one's own field."""
    from clipmath.caption import DECODERS

    options: dict[str, tuple[str, Any, dict[str, str]]] = {}
    for spec in DECODERS.list():
        cls = spec.options_class()
        for item in settings_fields(cls):
            flag = flag_of(cls, item.name)
            param = flag[2:].replace("-", "_")
            kind, _ = value_type(cls, item)
            if param not in options:
                decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
                option = typer.Option(*decls, help=field_help(cls, item.name))
                options[param] = (flag, Annotated[Optional[kind], option], {})
            options[param][2][spec.name] = item.name
    return options


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
    fields_of = {param: fields.get(spec.name) for param, (_, _, fields) in _DECODER_OPTIONS.items()}
    foreign = [_DECODER_OPTIONS[p][0] for p, v in given.items() if v is not None and fields_of[p] is None]
    if foreign:
        raise ClipmathError(f"{', '.join(foreign)} does not apply to the {spec.shown_name()} decoder")
    config = replace(spec.preset_options(preset), **{fields_of[p]: v for p, v in given.items() if v is not None})
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
    from clipmath.caption import DECODERS

    names = ", ".join(f"{s.name} ({s.description.split(':')[0]})" for s in DECODERS.list())
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
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter(n, keyword, annotation=a, default=d) for n, (a, d) in own.items()]
    parameters += [
        inspect.Parameter(n, keyword, annotation=a, default=None) for n, (_, a, _) in _DECODER_OPTIONS.items()
    ]

    def command(**values: Any) -> None:
        caption(**values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = caption.__doc__
    app.command("caption", epilog=_EXAMPLES)(command)


_DECODER_OPTIONS = _decoder_options()
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
