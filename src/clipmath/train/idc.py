"""CLIP4IDC's two training stages on image pairs with difference captions (CLEVR-Change, Spot-the-Diff, a change set).

Stage 1, adaptation (:class:`AdaptTask`, ``clipmath train idc-adapt``): symmetric contrastive loss between
the pair embedding (:mod:`clipmath.encoders.pair`) and the text embedding of one of the pair's captions, at CLIP's
own logit scale. In-batch pairs whose caption says the same thing are not negatives (every no-change pair, and
identical captions). Validation reports pair→text and text→pair R@1/5/10.

Stage 2, captioning (:class:`CaptionTask`, ``idc-caption``): the pair encoder (initialised from a stage-1
checkpoint, ``init_from``) plus a transformer decoder trained with teacher forcing; validation decodes with beam
search and reports the COCO caption metrics.

In both stages CLIP's pretrained weights train at ``lr · coef_lr`` and new parts (segment embedding, decoder) at
``lr`` (CLIP4IDC's ``--coef_lr``). Both run on the shared loop (:func:`clipmath.train.loop.fit`): safetensors + JSON
checkpoints, bit-identical resume, ``fit_seeds`` for mean ± std, autocast + grad scaling on CUDA, and gradient
checkpointing of the vision tower with ``gradient_checkpointing`` (the CUDA paths are untested on hardware here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from clipmath.caption.difference_model import build_captioner, caption_token_ids, decode_tokens
from clipmath.compose.checkpoint import load_checkpoint
from clipmath.data.change_pairs import ChangePair
from clipmath.encoders.base import Encoder
from clipmath.encoders.pair import PairEncoder, make_pair_encoder
from clipmath.errors import DatasetError, ModelLoadError
from clipmath.options import setting
from clipmath.train.config import TrainConfig
from clipmath.train.loop import TrainingError, TrainingTask

ADAPT_KIND = "idc-adapt"
CAPTION_KIND = "idc-caption"
KS = (1, 5, 10)


@dataclass
class IdcAdaptConfig(TrainConfig):
    """Stage 1 (defaults: CLIP4IDC README, CLEVR-Change retrieval: 12 epochs, batch 128, lr 1e-4, coef_lr 1e-3)."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.2
    monitor: str | None = "text->pair R@1"
    coef_lr: float = setting(1e-3, "Learning-rate factor of CLIP's pretrained weights.", minimum=0.0)
    max_words: int = setting(32, "Caption tokens kept (the end token included).", minimum=2)
    gradient_checkpointing: bool = setting(False, "Recompute activations in the backward pass (CUDA only).")
    image_cache: int = setting(4096, "Decoded pixel tensors kept in memory (0: decode every time).", minimum=0)


@dataclass
class IdcCaptionConfig(IdcAdaptConfig):
    """Stage 2 (defaults: CLIP4IDC README, CLEVR-Change captioning: 50 epochs, batch 16, lr 1e-4, coef_lr 1e-3)."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    monitor: str | None = "CIDEr"
    decoder_layers: int = setting(3, "Transformer layers of the caption decoder.", minimum=1)
    decoder_heads: int | None = setting(None, "Attention heads of the decoder (default: text width / 64).", minimum=1)
    dropout: float = setting(0.1, "Dropout in the decoder.", minimum=0.0, maximum=1.0)
    beam_size: int = setting(3, "Beam width when validating captions.", minimum=1)
    init_from: str | None = setting(None, "The stage-1 (idc-adapt) checkpoint to start from.")


class PixelCache:
    """Preprocessed pixels of image files, decoded once while the cache has room."""

    def __init__(self, encoder: Encoder, capacity: int) -> None:
        self.encoder = encoder
        self.capacity = capacity
        self.table: dict[Path, torch.Tensor] = {}

    def __call__(self, paths: Sequence[Path]) -> torch.Tensor:
        from clipmath.compose.base import open_image
        from clipmath.errors import ComposeError

        missing = [p for p in dict.fromkeys(paths) if p not in self.table]
        if missing:
            try:
                pixels = self.encoder.load_images([open_image(p) for p in missing])
            except ComposeError as exc:
                raise DatasetError(str(exc)) from None
            fresh = dict(zip(missing, pixels))
            if len(self.table) + len(fresh) <= self.capacity:
                self.table.update(fresh)
        else:
            fresh = {}
        return torch.stack([self.table[p] if p in self.table else fresh[p] for p in paths])


def _check_pairs(pairs: Sequence[ChangePair], what: str) -> None:
    if len(pairs) < 2:
        raise DatasetError(f"{what}: need at least 2 image pairs, got {len(pairs)}")
    empty = next((p.pair_id for p in pairs if not p.captions), None)
    if empty is not None:
        raise DatasetError(f"{what}: pair {empty} has no caption")


class _PairTask(TrainingTask):
    """What both stages share: pairs, pixels, per-batch caption picks, coef_lr parameter groups."""

    def __init__(self, encoder: Encoder, config: Any, pairs: Sequence[ChangePair]) -> None:
        super().__init__(encoder, config)
        _check_pairs(pairs, self.kind)
        self.pairs = list(pairs)
        self.pixels = PixelCache(encoder, config.image_cache)
        self.tokenizer = encoder.tokenizer

    def num_examples(self) -> int:
        return len(self.pairs)

    def _pick(self, rows: torch.Tensor, generator: torch.Generator) -> tuple[list[ChangePair], list[str]]:
        chosen = [self.pairs[int(r)] for r in rows]
        picks = (torch.rand(len(chosen), generator=generator) * torch.tensor([len(p.captions) for p in chosen])).long()
        return chosen, [p.captions[int(i)] for p, i in zip(chosen, picks)]

    def _images(self, chosen: Sequence[ChangePair]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels([p.before for p in chosen]), self.pixels([p.after for p in chosen])

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {
                "params": [p for p in self.model.pretrained_parameters() if p.requires_grad],
                "lr": self.config.lr * self.config.coef_lr,
            },
            {"params": [p for p in self.model.new_parameters() if p.requires_grad], "lr": self.config.lr},
        ]

    def composer(self) -> TrainingTask:  # validation hooks receive the task itself (its model and data helpers)
        return self


# ---- stage 1 -----------------------------------------------------------------------------------------------------
class AdaptTask(_PairTask):
    kind = ADAPT_KIND

    def __init__(self, encoder: Encoder, config: IdcAdaptConfig, pairs: Sequence[ChangePair]) -> None:
        super().__init__(encoder, config, pairs)
        self.config: IdcAdaptConfig = config
        self.model = make_pair_encoder(encoder, config.gradient_checkpointing)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, Any]]:
        order = torch.randperm(len(self.pairs), generator=generator)
        size = max(2, min(self.config.batch_size, len(order)))
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            if len(rows) < 2:  # a lone pair has no negatives
                continue
            chosen, captions = self._pick(rows, generator)
            groups = [("no change" if not p.changed else c) for p, c in zip(chosen, captions)]
            yield len(rows), (*self._images(chosen), captions, groups)

    def loss(self, batch: Any) -> torch.Tensor:
        before, after, captions, groups = batch
        pairs = F.normalize(self.model(before, after).embedding.float(), dim=-1)
        texts = F.normalize(self.text_embedding(captions), dim=-1)
        logits = self.model.clip.logit_scale.exp().clamp(max=100) * pairs @ texts.T
        same = torch.tensor([[a == b for b in groups] for a in groups], device=logits.device)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        labels = torch.arange(len(groups), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    @torch.no_grad()
    def embed(self, pairs: Sequence[ChangePair], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Normalised pair embeddings, each caption's normalised text embedding, and the pair each caption is of."""
        self.model.eval()
        vectors = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            vectors.append(self.model(*self._images(chunk)).embedding.float())
        captions = [c for p in pairs for c in p.captions]
        owner = [i for i, p in enumerate(pairs) for _ in p.captions]
        texts = [self.text_embedding(captions[start : start + 256]) for start in range(0, len(captions), 256)]
        return F.normalize(torch.cat(vectors), dim=-1), F.normalize(torch.cat(texts), dim=-1), owner

    def text_embedding(self, captions: Sequence[str]) -> torch.Tensor:
        """Unnormalised text embeddings of captions cut to ``max_words`` tokens (as CLIP4IDC does)."""
        tokens = self.tokenizer(
            list(captions), padding=True, truncation=True, max_length=self.config.max_words, return_tensors="pt"
        ).to(self.encoder.device)
        return self.model.text_embedding(tokens["input_ids"], tokens["attention_mask"]).float()


def pair_text_recalls(
    pair_vectors: torch.Tensor, text_vectors: torch.Tensor, owner: Sequence[int], ks: Sequence[int] = KS
) -> dict[str, float]:
    """pair→text R@k (a hit: any caption of the pair in the top k) and text→pair R@k (its own pair in the top k)."""
    similarity = pair_vectors @ text_vectors.T  # (pairs, texts)
    owner_t = torch.tensor(owner, device=similarity.device)
    metrics = {}
    text_rank = similarity.argsort(dim=1, descending=True)
    pair_rank = similarity.T.argsort(dim=1, descending=True)
    for k in ks:
        top_texts = owner_t[text_rank[:, :k]]
        hit = (top_texts == torch.arange(len(pair_vectors), device=owner_t.device)[:, None]).any(dim=1)
        metrics[f"pair->text R@{k}"] = float(hit.float().mean())
    for k in ks:
        hit = (pair_rank[:, :k] == owner_t[:, None]).any(dim=1)
        metrics[f"text->pair R@{k}"] = float(hit.float().mean())
    return metrics


def retrieval_validator(pairs: Sequence[ChangePair]) -> Callable[[AdaptTask], dict[str, float]]:
    """Stage-1 validation on held-out pairs (CLIP4IDC reports both directions at R@1/5/10)."""
    pairs = list(pairs)

    def validate(task: AdaptTask) -> dict[str, float]:
        vectors, texts, owner = task.embed(pairs)
        return pair_text_recalls(vectors, texts, owner)

    return validate


# ---- stage 2 -----------------------------------------------------------------------------------------------------
class CaptionTask(_PairTask):
    kind = CAPTION_KIND

    def __init__(self, encoder: Encoder, config: IdcCaptionConfig, pairs: Sequence[ChangePair]) -> None:
        super().__init__(encoder, config, pairs)
        self.config: IdcCaptionConfig = config
        pair = make_pair_encoder(encoder, config.gradient_checkpointing)
        if config.init_from:
            load_adapted_pair_encoder(pair, config.init_from, encoder)
        self.model = build_captioner(
            pair, encoder, config.decoder_layers, config.decoder_heads, config.max_words, config.dropout
        )

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, Any]]:
        order = torch.randperm(len(self.pairs), generator=generator)
        size = max(1, min(self.config.batch_size, len(order)))
        for start in range(0, len(order), size):
            chosen, captions = self._pick(order[start : start + size], generator)
            inputs, targets = caption_token_ids(
                self.tokenizer, captions, self.config.max_words, self.model.bos_id, self.model.eos_id
            )
            device = self.encoder.device
            yield len(chosen), (*self._images(chosen), inputs.to(device), targets.to(device))

    def loss(self, batch: Any) -> torch.Tensor:
        return self.model.loss(*batch)

    @torch.no_grad()
    def describe(self, pairs: Sequence[ChangePair], batch_size: int = 32, beam_size: int | None = None) -> list[str]:
        """Beam-search captions of pairs (the trained captioner's output)."""
        self.model.eval()
        out = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            ids = self.model.generate(*self._images(chunk), beam_size=beam_size or self.config.beam_size)
            out.extend(decode_tokens(self.tokenizer, i) for i in ids)
        return out


def load_adapted_pair_encoder(pair: PairEncoder, path: str | Path, encoder: Encoder) -> None:
    """Initialise ``pair`` from a stage-1 checkpoint trained on the same encoder."""
    checkpoint = load_checkpoint(path)
    if checkpoint.kind != ADAPT_KIND:
        raise ModelLoadError(f"{path} is a '{checkpoint.kind}' checkpoint; stage 2 starts from an '{ADAPT_KIND}' one")
    checkpoint.check_encoder(encoder)
    try:
        pair.load_state_dict(checkpoint.tensors)
    except RuntimeError as exc:
        raise TrainingError(f"{path} does not match this model: {str(exc).splitlines()[0]}") from None


def caption_validator(pairs: Sequence[ChangePair], meteor: bool = False) -> Callable[[CaptionTask], dict[str, float]]:
    """Stage-2 validation: beam-search captions of held-out pairs scored with the COCO caption metrics."""
    from clipmath.caption.metrics import caption_metrics

    pairs = list(pairs)

    def validate(task: CaptionTask) -> dict[str, float]:
        predictions = task.describe(pairs)
        scores = caption_metrics(predictions, [list(p.captions) for p in pairs], meteor=meteor)
        return {k: v for k, v in scores.as_dict().items() if v is not None}

    return validate


def adapt_task_factory(encoder: Encoder, pairs: Sequence[ChangePair]) -> Callable[[IdcAdaptConfig], AdaptTask]:
    return lambda config: AdaptTask(encoder, config, pairs)


def caption_task_factory(encoder: Encoder, pairs: Sequence[ChangePair]) -> Callable[[IdcCaptionConfig], CaptionTask]:
    return lambda config: CaptionTask(encoder, config, pairs)
