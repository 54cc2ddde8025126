"""Adapt a causal LM to caption text with SimCTG's contrastive token objective (as MAGIC does before decoding).

The loss of a batch of caption sentences is

    MLE (next-token cross-entropy)  +  mean over token pairs i ≠ j of max(0, ρ − 1 + cos(h_i, h_j))

where ``h`` are the LM's last-layer hidden states of one sentence's tokens (padding excluded): tokens of a sentence
are pushed apart in representation space, which the degeneration penalty of :mod:`clipmath.caption.magic` then
reads. ``ρ`` is SimCTG's margin (0.5).

The output is a folder that loads like any LM (``load_language_model(FOLDER)``, ``--lm FOLDER``):
``save_pretrained`` weights (safetensors) and tokenizer, plus ``clipmath_lm.json`` (what it was adapted from, the
config, the per-epoch history). ``resume/`` holds the optimiser and random states after the last epoch, so a run
interrupted between epochs continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from clipmath.caption.language_models import LM_INFO_FILE, LanguageModel, load_language_model, resolve_lm_name
from clipmath.options import setting
from clipmath.train.config import device_setting
from clipmath.train.loop import (
    TrainingError,
    _jsonable,
    _optimiser_state,
    _optimiser_tensors,
    _python_rng,
    seed_everything,
)

log = logging.getLogger(__name__)

KIND = "caption-lm"
RESUME_DIR = "resume"


@dataclass
class CaptionLMConfig:
    """Options of ``clipmath train caption-lm`` (MAGIC's LM training: margin 0.5, lr 2e-5; sizes are ours)."""

    base: str = setting("smollm2-135m", "The LM to adapt: smollm2-135m, gpt2, a folder.", flag="--lm")
    epochs: int = setting(1, "Passes over the sentences.", minimum=1)
    batch_size: int = setting(16, "Sentences per step.", minimum=1)
    lr: float = setting(2e-5, "AdamW learning rate.", minimum=0.0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", minimum=0.0)
    margin: float = setting(0.5, "SimCTG margin rho.")
    max_tokens: int = setting(40, "Captions longer than this many tokens are cut.", minimum=2)
    max_steps: int | None = setting(None, "Stop after this many steps in all (short runs).", minimum=1)
    seed: int = setting(42, "Seed of shuffling and initialisation.")
    device: str = device_setting()
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # provenance of the texts (file, count), stored as given


@dataclass
class CaptionLMResult:
    output: Path
    history: list[dict[str, Any]]
    resumed_from_epoch: int = 0
    lm: LanguageModel | None = field(default=None, repr=False)  # the adapted LM (frozen again, eval mode)

    @property
    def losses(self) -> list[float]:
        """Mean training loss of every logged stretch (one per epoch, and per ``log_every`` steps within)."""
        return [float(x) for record in self.history for x in record.get("step_losses", [record["loss"]])]


def simctg_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, margin: float):
    """``(total, mle, contrastive)`` for a padded batch; the first token of each row is the context prefix."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    logits = out.logits[:, :-1].float()
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    mle = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    hidden = torch.nn.functional.normalize(out.hidden_states[-1].float(), dim=-1)
    cosine = hidden @ hidden.transpose(1, 2)  # (B, L, L)
    valid = attention_mask.bool()
    pairs = valid[:, :, None] & valid[:, None, :]
    pairs &= ~torch.eye(input_ids.shape[1], dtype=torch.bool, device=input_ids.device)[None]
    hinge = torch.clamp(margin - 1.0 + cosine, min=0.0)
    contrastive = (hinge * pairs).sum() / pairs.sum().clamp_min(1)
    return mle + contrastive, mle, contrastive


def train_caption_lm(
    texts: Sequence[str], output: str | Path, config: CaptionLMConfig | None = None, resume: bool = True
) -> CaptionLMResult:
    """Fine-tune ``config.base`` on ``texts`` into the folder ``output`` (resumes an unfinished run there)."""
    config = config or CaptionLMConfig()
    output = Path(output)
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise TrainingError("caption-lm: no caption texts to train on")
    seed_everything(config.seed)
    history: list[dict[str, Any]] = []
    step = 0
    info_path = output / LM_INFO_FILE
    if info_path.exists() and resume:
        lm, history, step = _restore(output, config)
    else:
        if output.exists() and not resume:
            shutil.rmtree(output)
        lm = load_language_model(config.base, device=config.device)
    model = lm.model
    for param in model.parameters():
        param.requires_grad_(True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if history:
        _restore_optimiser(output, optimiser)
    result = CaptionLMResult(output, history, resumed_from_epoch=len(history), lm=lm)
    if len(history) >= config.epochs or (config.max_steps is not None and step >= config.max_steps):
        _freeze(model)
        return result

    for epoch in range(len(history), config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(texts), generator=generator).tolist()
        model.train()
        started, total, seen, stop = time.perf_counter(), 0.0, 0, False
        step_losses: list[float] = []
        batches = range(0, len(order), config.batch_size)
        for start in tqdm(batches, desc=f"{KIND} epoch {epoch + 1}/{config.epochs}", disable=not config.progress):
            batch = [texts[i] for i in order[start : start + config.batch_size]]
            ids, mask = _tokenise(lm, batch, config.max_tokens)
            loss, _, _ = simctg_loss(model, ids, mask, config.margin)
            if not torch.isfinite(loss):
                raise TrainingError(f"{KIND}: the loss became {float(loss)} at step {step}; lower the learning rate")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            step_losses.append(float(loss.detach()))
            if config.max_steps is not None and step >= config.max_steps:
                stop = True
                break
        model.eval()
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / seen,
                "step_losses": step_losses,
                "steps": step,
                "examples": seen,
                "seconds": time.perf_counter() - started,
            }
        )
        _save(lm, optimiser, output, config, history, step, len(texts))
        if stop:
            break
    _freeze(model)
    return result


def _freeze(model: torch.nn.Module) -> None:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)


def _tokenise(lm: LanguageModel, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each caption as context prefix + text + end-of-text, right-padded; prompts start where decoding starts."""
    prefix = lm.encode(lm.context_prefix) if lm.context_prefix else []
    end = lm.end_of_text_ids()
    rows = [(prefix + lm.encode(" " + t if prefix else t))[: max_tokens - len(end)] + end for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids.to(lm.device), mask.to(lm.device)


# ---- checkpoint and resume ------------------------------------------------------------------------------------
def _save(
    lm: LanguageModel,
    optimiser: torch.optim.Optimizer,
    output: Path,
    config: CaptionLMConfig,
    history: list[dict[str, Any]],
    step: int,
    corpus_size: int,
) -> None:
    """Write the model folder and the resume state, each through a staging folder (never half-written)."""
    from safetensors.torch import save_file

    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lm.model.save_pretrained(staging)
    lm.tokenizer.save_pretrained(staging)
    info = {
        "kind": KIND,
        "model_id": f"{lm_base_id(lm)}+caption-lm",
        "base": lm_base_id(lm),
        "context_prefix": lm.context_prefix,
        "pretrained": lm.pretrained,
        "config": asdict(config),
        "training": {"epochs_done": len(history), "steps": step, "history": history, "texts": corpus_size},
    }
    (staging / LM_INFO_FILE).write_text(json.dumps(info, indent=1))
    tensors, state = _optimiser_tensors(optimiser)
    tensors["rng.torch"] = torch.get_rng_state()
    state.update(
        {
            "epochs_done": len(history),
            "steps": step,
            "python_rng": _jsonable(random.getstate()),
            "numpy_rng": _jsonable(np.random.get_state()),
        }
    )
    (staging / RESUME_DIR).mkdir()
    weights = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(weights, str(staging / RESUME_DIR / "optimizer.safetensors"))
    (staging / RESUME_DIR / "state.json").write_text(json.dumps(state))
    old = output.with_name(output.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        os.replace(output, old)
    os.replace(staging, output)
    shutil.rmtree(old, ignore_errors=True)


def lm_base_id(lm: LanguageModel) -> str:
    """The original model's name (an adapted LM's ``model_id`` carries a ``+caption-lm`` suffix)."""
    return lm.model_id.removesuffix("+caption-lm")


def _restore(output: Path, config: CaptionLMConfig) -> tuple[LanguageModel, list[dict[str, Any]], int]:
    info = json.loads((output / LM_INFO_FILE).read_text())
    if info.get("kind") != KIND:
        raise TrainingError(f"{output} is not a caption-lm run; choose another 'output' or set 'resume' off")
    base = resolve_lm_name(config.base)
    if info.get("base") != base:
        raise TrainingError(
            f"{output} adapts '{info.get('base')}', this run adapts '{base}': "
            "choose another 'output' or set 'resume' off"
        )
    if not (output / RESUME_DIR / "state.json").exists():
        raise TrainingError(f"{output} has no resume state; set 'resume' off to train again from scratch")
    lm = load_language_model(str(output), device=config.device)
    training = info["training"]
    return lm, list(training["history"]), int(training["steps"])


def _restore_optimiser(output: Path, optimiser: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    state = json.loads((output / RESUME_DIR / "state.json").read_text())
    tensors = load_file(str(output / RESUME_DIR / "optimizer.safetensors"))
    optimiser.load_state_dict(_optimiser_state(tensors, state))
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate(_python_rng(state["python_rng"]))
    numpy_state = state["numpy_rng"]
    np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
