"""``clipmath train caption-lm``: adapt a causal LM to caption text (SimCTG objective), for the caption decoders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli.options import DeviceOpt, JsonOpt, ThreadsOpt
from clipmath.cli.output import emit, status
from clipmath.cli.runtime import set_threads
from clipmath.cli.train import app
from clipmath.train.caption_lm import CaptionLMConfig

_DEFAULTS = CaptionLMConfig()
_EXAMPLES = """Adapts the LM the caption decoders use to caption-style text (MAGIC's step before decoding), with
SimCTG's objective: next-token cross-entropy plus a margin loss that keeps a sentence's token representations apart.
The output folder loads as a language model anywhere: --lm FOLDER.

Examples:

  clipmath train caption-lm --texts examples/caption-corpus/coco_captions.txt -o runs/caption-lm

  clipmath train caption-lm --texts captions.txt --lm smollm2-135m --max-steps 200 -o runs/caption-lm
  clipmath caption --image photo.jpg --decoder magic --lm runs/caption-lm
"""


@app.command("caption-lm", epilog=_EXAMPLES)
def train_caption_lm_command(
    texts: Annotated[
        Path, typer.Option("--texts", help="Caption sentences: one per line, or JSON (list / items with 'captions').")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the adapted LM (resumed if unfinished).")],
    lm: Annotated[str, typer.Option("--lm", help="The LM to adapt: smollm2-135m, gpt2, a folder.")] = _DEFAULTS.base,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the sentences.")] = _DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option(min=1, help="Sentences per step.")] = _DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = _DEFAULTS.lr,
    margin: Annotated[float, typer.Option(help="SimCTG margin rho.")] = _DEFAULTS.margin,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many steps (short runs).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of shuffling and initialisation.")] = _DEFAULTS.seed,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Overwrite an unfinished run in --output.")] = False,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a causal LM on caption sentences with the SimCTG contrastive token objective."""
    from clipmath.train.caption_lm import read_caption_texts, train_caption_lm

    set_threads(threads)
    sentences = read_caption_texts(texts)
    config = CaptionLMConfig(
        base=lm,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        margin=margin,
        max_steps=max_steps,
        seed=seed,
        device=device,
        progress=not as_json,
        extra={"texts": str(texts), "count": len(sentences)},
    )
    status(f"adapting {lm} on {len(sentences)} caption sentences from {texts}", as_json)
    result = train_caption_lm(sentences, output, config, resume=not no_resume)
    history = [{k: v for k, v in record.items() if k != "step_losses"} for record in result.history]
    payload = {"output": str(result.output), "history": history}
    lines = [f"epoch {r['epoch']}: loss {r['loss']:.4f} ({r['steps']} steps)" for r in history]
    emit(payload, as_json, lambda: [*lines, f"adapted LM: {result.output} (use --lm {result.output})"])
