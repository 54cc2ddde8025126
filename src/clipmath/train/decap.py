"""DeCap's text-only training (Li et al., ICLR 2023) on the shared loop: a caption corpus in, a decoder out.

Each corpus caption is embedded once by the frozen encoder (the cached caption memory,
:mod:`clipmath.caption.memory`); a small transformer decoder (:class:`clipmath.caption.decap.DecapModel`), trained
from scratch, learns to write the caption back from its embedding (teacher forcing, cross-entropy). With
``noise_variance`` > 0 the embedding gets Gaussian noise of that variance first (CapDec: 0.016).

A few captions (``validation_captions``) are held out: after each epoch their embeddings are projected onto the
memory of the training captions (as images are at inference), decoded greedily, and scored against the held-out
caption itself (CIDEr, BLEU-4; one reference each, so lower than image-caption scores).

    from clipmath.train.decap import DecapConfig, train_decap
    result = train_decap(encoder, "examples/caption-corpus/coco_captions.txt", DecapConfig(), "runs/decap")
    print(result.history[-1])           # loss, validation metrics
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from clipmath.caption.decap import (
    KIND,
    DecapModel,
    TrainedDecap,
    build_model,
    teacher_forcing,
    token_ids,
    train_vocabulary,
)
from clipmath.caption.memory import DECAP_TEMPERATURE, CaptionMemory, corpus_digest, read_corpus
from clipmath.encoders.base import Encoder
from clipmath.options import setting
from clipmath.train.config import TrainConfig
from clipmath.train.loop import TrainingError, TrainingTask, TrainResult, ValidateFn, fit

log = logging.getLogger(__name__)


@dataclass
class DecapConfig(TrainConfig):
    """DeCap training (the paper: 4 layers of GPT-2 width on 560k COCO captions; defaults here train on a CPU)."""

    epochs: int = setting(4, "Passes over the training captions.", minimum=1)
    batch_size: int = setting(64, "Captions per optimiser step.", minimum=1)
    lr: float = setting(1e-3, "AdamW learning rate.", minimum=0)
    weight_decay: float = setting(0.01, "AdamW weight decay.", minimum=0)
    grad_clip: float | None = setting(1.0, "Clip the gradient norm to this value (none: no clipping).")
    width: int = setting(256, "Decoder width (the paper: 768).", minimum=1)
    layers: int = setting(2, "Transformer layers (the paper: 4).", minimum=1)
    heads: int = setting(4, "Attention heads (width must divide by it).", minimum=1)
    max_tokens: int = setting(24, "Longest caption in words, the end token included (longer ones are cut).", minimum=2)
    dropout: float = setting(0.1, "Dropout in the decoder.", minimum=0, maximum=1)
    min_word_count: int = setting(2, "Words seen fewer times in the corpus are unknown (never generated).", minimum=1)
    noise_variance: float = setting(
        0.0, "CapDec: Gaussian noise of this variance on the training embedding (0.016).", minimum=0
    )
    validation_captions: int = setting(200, "Captions held out for per-epoch validation (0: none).", minimum=0)
    temperature: float = setting(
        DECAP_TEMPERATURE, "Validation: projection softmax temperature (DeCap: 0.01).", minimum=0
    )
    embed_batch_size: int = setting(256, "Captions per encoder call when embedding the corpus.", minimum=1)
    monitor: str | None = setting("CIDEr", "Validation metric summarised across seeds.")


class DecapTask(TrainingTask):
    """Teacher-forced decoding of each training caption from its own (optionally noised) text embedding."""

    kind = KIND

    def __init__(self, encoder: Encoder, config: DecapConfig, texts: Sequence[str], source: str = "") -> None:
        super().__init__(encoder, config)
        if config.width % config.heads:
            raise TrainingError(f"decap: width {config.width} does not divide into {config.heads} heads")
        if config.max_tokens < 2:
            raise TrainingError("decap: max_tokens must be at least 2")
        texts = list(texts)
        held = _held_out(len(texts), config.validation_captions, config.seed)
        if len(held) >= len(texts):
            raise TrainingError(f"decap: {len(texts)} captions leave none to train on after the held-out ones")
        self.source = source
        self.texts = texts
        memory = CaptionMemory.build(texts, encoder, source, progress=config.progress)
        keep = np.setdiff1d(np.arange(len(texts)), held)
        self.train_rows = keep
        self.held_rows = held
        self.memory = CaptionMemory([texts[i] for i in keep], memory.vectors[keep], memory.model_id, source)
        self.held_vectors = torch.from_numpy(memory.vectors[held])
        self.train_vectors = torch.from_numpy(self.memory.vectors).to(encoder.device)
        self.tokenizer = train_vocabulary(self.memory.texts, config.min_word_count)
        self.bodies = token_ids(self.tokenizer, self.memory.texts, config.max_tokens)
        self.model: DecapModel = build_model(config.to_dict(), self.tokenizer.get_vocab_size(), encoder.dim).to(
            encoder.device
        )

    def num_examples(self) -> int:
        return len(self.bodies)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, Any]]:
        order = torch.randperm(len(self.bodies), generator=generator)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            yield len(rows), rows

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        inputs, targets = teacher_forcing([self.bodies[int(i)] for i in batch])
        device = self.encoder.device
        prefix = self.train_vectors[batch.to(device)]
        if self.config.noise_variance > 0:
            prefix = prefix + torch.randn_like(prefix) * float(self.config.noise_variance) ** 0.5
        logits = self.model(inputs.to(device), prefix)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(), ignore_index=-100)

    def composer(self) -> DecapTask:  # validation hooks receive the task itself
        return self

    def preprocessing(self) -> str:
        return "text"

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.to_str(),
            "vocab_size": self.tokenizer.get_vocab_size(),
            "corpus": {
                "path": str(Path(self.source).resolve()) if self.source else "",
                "sha256": corpus_digest(self.texts),
                "count": len(self.texts),
                "trained_on": len(self.bodies),
                "held_out": [int(i) for i in self.held_rows],
            },
        }

    def trained(self) -> TrainedDecap:
        """The current weights as a decoder (eval mode while used; training mode is the loop's business)."""
        return TrainedDecap(self.model, self.tokenizer, self.checkpoint_extra()["corpus"])

    def describe(self, prefixes: torch.Tensor, beam_size: int = 1, batch_size: int = 64) -> list[str]:
        """Greedy (or beam) captions of prefix rows, in batches."""
        decap = self.trained()
        out: list[str] = []
        for start in range(0, len(prefixes), batch_size):
            out += decap.generate(prefixes[start : start + batch_size].to(self.encoder.device), beam_size)
        return out


def _held_out(count: int, wanted: int, seed: int) -> np.ndarray:
    """Sorted row numbers of the held-out captions: a seeded choice, the same for every run of that seed."""
    wanted = max(0, min(wanted, count // 10))
    if not wanted:
        return np.array([], dtype=int)
    return np.sort(np.random.default_rng(seed).choice(count, size=wanted, replace=False))


def held_out_validator(meteor: bool = False) -> ValidateFn:
    """Per epoch: the held-out captions' embeddings, projected onto the training memory, decoded greedily and
    scored against the held-out caption (COCO CIDEr and BLEU-4; Java needed for the PTB tokenizer)."""
    from clipmath.caption.metrics import caption_metrics

    def validate(task: DecapTask) -> dict[str, float]:
        if not len(task.held_rows):
            return {}
        prefixes = task.memory.project(task.held_vectors, task.config.temperature)
        predictions = task.describe(prefixes)
        references = [[task.texts[i]] for i in task.held_rows]
        scores = caption_metrics(predictions, references, meteor=meteor).percent()
        return {name: float(scores[name]) for name in ("CIDEr", "BLEU-4") if scores.get(name) is not None}

    return validate


def train_decap(
    encoder: Encoder,
    texts_path: str | Path,
    config: DecapConfig | None = None,
    output: str | Path = "runs/decap",
    resume: bool = True,
    validate: ValidateFn | None = None,
) -> TrainResult:
    """Train DeCap on the captions of ``texts_path`` (one a line, or JSON) for ``encoder``'s space into ``output``.

    Checkpoints after each epoch; an unfinished run in ``output`` resumes bit-identically (``resume``). ``validate``
    replaces the default held-out-caption validation (:func:`held_out_validator`), e.g. to score images each epoch.
    """
    config = config or DecapConfig()
    texts = read_corpus(texts_path)
    validator = validate if validate is not None else default_validator(config)
    return fit(lambda c: DecapTask(encoder, c, texts, str(texts_path)), config, output, validator, resume)


def default_validator(config: DecapConfig) -> ValidateFn | None:
    """The held-out-caption validator when captions are held out and Java (the COCO tokenizer's) is installed."""
    if not config.validation_captions:
        return None
    if shutil.which("java") is None:  # the COCO metrics' PTB tokenizer is a Java program
        log.warning("decap: no Java runtime, so no per-epoch validation (install one for CIDEr per epoch)")
        return None
    return held_out_validator()
