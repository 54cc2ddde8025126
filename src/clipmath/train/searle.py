"""SEARLE training: OTI over a set of images, and the phi network distilled from the OTI tokens.

:func:`run_oti` inverts images batch by batch (``InversionSettings.steps`` AdamW steps each, EMA of the token) and
checkpoints every few batches; an interrupted run resumes after the last saved batch. Its checkpoint serves both as
the ``oti`` method (tokens looked up by image feature) and as the teacher for phi.

:class:`PhiTask` trains phi with the shared loop: a contrastive distillation loss between phi's predicted tokens and
the OTI tokens (cosine logits over the batch at temperature ``temperature``), plus the concept-phrase regulariser
(``$`` = predicted token inside phrases of the image's nearest concepts should encode like the real phrase).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from clipmath.compose import method_spec
from clipmath.compose.checkpoint import describe, exists, load_checkpoint, save_checkpoint
from clipmath.compose.searle import (
    OTI_KIND,
    PHI_KIND,
    ConceptBank,
    ConceptVocabulary,
    OtiComposer,
    Phi,
    SearleComposer,
    frozen,
    invert,
)
from clipmath.encoders.base import Encoder
from clipmath.errors import ClipmathError
from clipmath.train.config import OtiConfig, PhiConfig
from clipmath.train.features import FeatureCache
from clipmath.train.loop import TrainingError, TrainingTask, ValidateFn, seed_everything, shuffled_batches

log = logging.getLogger(__name__)


# ---- OTI -------------------------------------------------------------------------------------------------------------
@dataclass
class OtiResult:
    """An OTI run: its checkpoint, how many images it holds, and the loss at the first and last step."""

    checkpoint: Path
    images: int
    inverted: int  # images inverted by this call (the rest came from a resumed checkpoint)
    seconds: float
    first_loss: float = math.nan  # mean over this call's batches of the loss at step 1
    last_loss: float = math.nan  # ... at the last step
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: torch.Tensor | None = field(default=None, repr=False)  # every token, in image order

    @property
    def examples_per_second(self) -> float:
        return self.inverted / self.seconds if self.seconds else math.nan


def run_oti(
    encoder: Encoder,
    images: Sequence[str | Path],
    config: OtiConfig,
    output: str | Path,
    vocabulary: ConceptVocabulary | None = None,
    cache: FeatureCache | None = None,
    validate: ValidateFn | None = None,
    resume: bool = True,
) -> OtiResult:
    """Invert ``images`` into pseudo-tokens; checkpoint to ``output`` every ``config.save_every`` batches."""
    output = Path(output)
    seed_everything(config.seed)
    settings = config.settings()
    ids = [str(Path(p)) for p in images]
    if not ids:
        raise TrainingError("OTI needs at least one image")
    features = (cache or FeatureCache(encoder, progress=config.progress)).images(list(images))
    width = encoder.token_embedding_table().embedding_dim
    chunks = [torch.zeros(0, width)]  # tokens in image order, one chunk per batch (joined when saving)
    history: list[dict[str, Any]] = []
    if resume and exists(output):
        previous = load_checkpoint(output, OTI_KIND, encoder)
        done = list(previous.extra.get("ids", []))
        if done != ids[: len(done)]:
            raise TrainingError(
                f"{output} holds OTI tokens of other images; choose another 'output' or set 'resume' off"
            )
        chunks = [previous.tensors.get("tokens", chunks[0]).float()]
        history = list(previous.training.get("history", []))
    bank = ConceptBank.build(encoder, vocabulary) if vocabulary is not None and settings.lambda_reg else None

    def done() -> int:
        return sum(len(c) for c in chunks)

    def save() -> None:
        chunks[:] = [torch.cat(chunks)]
        checkpoint = describe(OTI_KIND, encoder.info, encoder.transform.key, config.to_dict())
        checkpoint.tensors = {"tokens": chunks[0], "image_features": features[: done()]}
        checkpoint.training = {"seed": config.seed, "images_done": done(), "history": history}
        checkpoint.extra = {"ids": ids[: done()], "concepts": vocabulary.to_dict() if vocabulary else None}
        save_checkpoint(checkpoint, output)

    started, inverted, first, last = time.perf_counter(), 0, [], []
    size = max(1, settings.batch_size)
    with tqdm(total=len(ids), initial=done(), unit="img", desc="OTI", disable=not config.progress) as bar:
        for count, start in enumerate(range(done(), len(ids), size), start=1):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + start)
            batch, losses = invert(encoder, features[start : start + size], settings, bank, generator, config.amp)
            chunks.append(batch.float().cpu())
            inverted += len(batch)
            first.append(losses[0] if losses else math.nan)
            last.append(losses[-1] if losses else math.nan)
            history.append({"images": start + len(batch), "first_loss": first[-1], "last_loss": last[-1]})
            bar.update(len(batch))
            bar.set_postfix(loss=f"{last[-1]:.4f}")
            if count % max(1, config.save_every) == 0:
                save()
    seconds = time.perf_counter() - started
    save()
    result = OtiResult(
        output,
        done(),
        inverted,
        seconds,
        sum(first) / len(first) if first else math.nan,
        sum(last) / len(last) if last else math.nan,
        tokens=chunks[0],
    )
    if validate is not None:
        from clipmath.compose.searle import oti_from_checkpoint

        result.metrics = {k: float(v) for k, v in validate(oti_from_checkpoint(load_checkpoint(output))).items()}
    return result


# ---- phi ----------------------------------------------------------------------------------------------------------
def distillation_loss(predicted: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Contrastive distillation: each predicted token must be closer (cosine) to its own OTI token than to the
    batch's others."""
    logits = F.normalize(predicted.float(), dim=-1) @ F.normalize(teacher.float(), dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


class PhiTask(TrainingTask):
    kind = PHI_KIND

    def __init__(
        self,
        encoder: Encoder,
        config: PhiConfig,
        image_features: torch.Tensor,
        oti_tokens: torch.Tensor,
        bank: ConceptBank | None = None,
    ) -> None:
        super().__init__(encoder, config)
        self.config: PhiConfig = config
        if len(image_features) != len(oti_tokens):
            raise TrainingError("phi: image features and OTI tokens differ in number")
        width = encoder.token_embedding_table().embedding_dim
        if oti_tokens.shape[1] != width:
            raise TrainingError(f"phi: OTI tokens are {oti_tokens.shape[1]}-d, the model's tokens {width}-d")
        device = encoder.device
        self.features = F.normalize(image_features.float(), dim=-1).to(device)
        self.teacher = oti_tokens.float().to(device)
        self.bank = bank if config.lambda_reg else None
        self.nearest = self.bank.nearest_concepts(self.features, config.top_k) if self.bank is not None else None
        self.model = Phi(encoder.dim, width, config.hidden_dim, config.dropout).to(device)
        self._generator = torch.Generator().manual_seed(config.seed)

    def num_examples(self) -> int:
        return len(self.features)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
        self._generator = generator
        yield from shuffled_batches(len(self.features), self.config.batch_size, generator)

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        predicted = self.model(self.features[rows.to(self.features.device)])
        loss = self.config.lambda_distil * distillation_loss(predicted, self.teacher[rows], self.config.temperature)
        if self.bank is not None and self.nearest is not None:
            phrases = self.bank.sample_phrases(self.nearest[rows.cpu()], self._generator)
            with frozen(self.encoder):  # gradients flow through the text encoder to phi only
                regulariser = self.bank.regularisation(self.encoder, predicted, phrases)
            loss = loss + self.config.lambda_reg * regulariser
        return loss

    def composer(self) -> SearleComposer:
        return method_spec("searle").adopt(SearleComposer(self.model, self.config.prompt))

    def checkpoint_config(self) -> dict[str, Any]:
        return {**self.config.to_dict(), **self.model.dims}


def phi_task_factory(
    encoder: Encoder, oti_checkpoint: str | Path, vocabulary: ConceptVocabulary | None = None
) -> Callable[[PhiConfig], PhiTask]:
    """Phi tasks taught by an OTI checkpoint (its image features and tokens); the regulariser uses ``vocabulary``
    or, if none is given, the vocabulary the OTI run used."""
    try:
        teacher = load_checkpoint(oti_checkpoint, OTI_KIND, encoder)
    except ClipmathError as exc:
        raise TrainingError(f"phi needs an OTI checkpoint (`clipmath train oti`): {exc}") from None
    if "tokens" not in teacher.tensors or len(teacher.tensors["tokens"]) < 2:
        raise TrainingError(f"{oti_checkpoint} holds fewer than 2 OTI tokens; invert more images first")
    if vocabulary is None and teacher.extra.get("concepts"):
        vocabulary = ConceptVocabulary.from_dict(teacher.extra["concepts"])
    bank = ConceptBank.build(encoder, vocabulary) if vocabulary is not None else None
    features, tokens = teacher.tensors["image_features"], teacher.tensors["tokens"]
    return lambda config: PhiTask(encoder, config, features, tokens, bank)


def oti_composer(output: str | Path) -> OtiComposer:
    """The ``oti`` composer of a finished :func:`run_oti` checkpoint."""
    from clipmath.compose.searle import oti_from_checkpoint

    return oti_from_checkpoint(load_checkpoint(output, OTI_KIND))
