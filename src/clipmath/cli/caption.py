"""``clipmath caption`` (ZeroCap on an image or an expression) and ``clipmath eval-captions`` (COCO metrics)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

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


@app.command(epilog=_EXAMPLES)
def caption(
    image: Annotated[Optional[str], typer.Option("--image", "-i", help="Image to caption.")] = None,
    expr: Annotated[
        Optional[str],
        typer.Option(
            "--expr", "-e", help="Caption an expression: '+woman.jpg +king.jpg -man.jpg' (ZeroCap arithmetic)."
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(help="ZeroCap option set: caption, arithmetic, real-world or ocr (options below override it)."),
    ] = "caption",
    cond_text: Annotated[Optional[str], typer.Option("--cond-text", help="Prompt the caption continues.")] = None,
    beam_size: Annotated[Optional[int], typer.Option(min=1, help="Beams (ZeroCap: 5).")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=1, help="Maximum caption length in LM tokens (15).")] = None,
    num_iterations: Annotated[
        Optional[int], typer.Option(min=0, help="Context optimisation steps per token (5); 0 = plain LM decoding.")
    ] = None,
    end_factor: Annotated[Optional[float], typer.Option(help="End-token boost from the second token (1.01).")] = None,
    fusion_factor: Annotated[Optional[float], typer.Option(help="Weight of the shifted distribution (0.99).")] = None,
    grad_norm_factor: Annotated[Optional[float], typer.Option(help="Gradient norm exponent (0.9).")] = None,
    reset_context_delta: Annotated[
        Optional[bool], typer.Option(help="Recompute a clean context before every token (ZeroCap default: on).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (decoding is deterministic under it).")] = 0,
    decoder: Annotated[
        str,
        typer.Option(
            help="zerocap (gradient steps per token, slow), magic (gradient-free, fast), memory (nearest corpus "
            "captions, --corpus) or decap (a decoder trained on captions alone, --checkpoint)."
        ),
    ] = "zerocap",
    corpus: Annotated[
        Optional[str], typer.Option(help="memory/decap: caption corpus (one a line, or JSON).")
    ] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="decap: the trained decoder's folder.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="magic: LM candidates per token (45).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="magic: degeneration penalty weight (0.1).")] = None,
    beta: Annotated[Optional[float], typer.Option(help="magic: target similarity weight (2.0).")] = None,
    lm: Annotated[str, typer.Option("--lm", help="Language model: auto, smollm2-135m, gpt2, a folder.")] = "auto",
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Caption an image or an image/text expression with CLIP-guided LM decoding (ZeroCap)."""
    from dataclasses import replace as replace_fields

    from clipmath.caption import PRESETS, load_language_model
    from clipmath.caption import caption as run_caption
    from clipmath.compose import CompositionQuery, get_composer, parse_expression

    if (image is None) == (expr is None):
        raise ClipmathError("give exactly one of --image or --expr")
    if preset not in PRESETS:
        raise ClipmathError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    terms = parse_expression(expr) if expr else []
    encoder = load_model(model, device, dtype=dtype, threads=threads, as_json=True)
    query = CompositionQuery(terms=terms) if expr else CompositionQuery(reference=image)
    target = get_composer("expr" if expr else "image").compose(encoder, [query])[0]
    overrides = {
        "cond_text": cond_text,
        "beam_size": beam_size,
        "target_seq_length": max_length,
        "num_iterations": num_iterations,
        "end_factor": end_factor,
        "fusion_factor": fusion_factor,
        "grad_norm_factor": grad_norm_factor,
        "reset_context_delta": reset_context_delta,
        "seed": seed,
    }
    config = replace_fields(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    from clipmath.caption import DECODERS

    spec = DECODERS.get(decoder)
    language_model = load_language_model(lm, device=device) if spec.uses_lm else None
    lm_label = language_model.label() if language_model is not None else "none"
    status(f"model: {encoder.info.label()} · language model: {lm_label}", as_json)
    if decoder == "zerocap":
        captions = run_caption(target, language_model, encoder, config, progress=not as_json)
    else:
        given = {"cond_text": config.cond_text, "max_length": max_length, "k": top_k, "alpha": alpha, "beta": beta}
        given.update(corpus=corpus, checkpoint=checkpoint, beam_size=beam_size)
        fields = {f.name for f in dataclasses.fields(spec.options_class())}  # options of other decoders: ignored
        config = spec.make_options(**{k: v for k, v in given.items() if v is not None and k in fields})
        captions = spec.create(language_model, encoder, config).caption(target, progress=not as_json)
    payload = {
        "model": encoder.info.label(),
        "language_model": lm_label,
        "decoder": decoder,
        "config": asdict(config),
        "seconds": captions[0].seconds,
        "captions": [{"text": c.full_text, "clip_score": c.clip_score, "lm_score": c.lm_score} for c in captions],
    }
    emit(payload, as_json, lambda: [f"{c.clip_score:.3f}  {c.full_text}" for c in captions])


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
