"""Training configurations: one dataclass per method, all sharing :class:`TrainConfig`.

Every config is stored inside the checkpoint it produces (``clipmath.json``), so a checkpoint says how it was made.
Defaults follow the reference implementations where their READMEs give them (SIMAT: lr 1e-3, τ 0.1, batch 512;
SEARLE: OTI and phi settings); CLIP4Cir's README gives none, so its values are this project's choices, in the
range the CLIP4Cir paper reports (fine-tuning lr ~1e-6, Combiner lr ~1e-5, logit scale 100).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from clipmath.compose.searle import DEFAULT_PROMPT, InversionSettings
from clipmath.encoders.precision import DTYPE_CHOICES
from clipmath.options import setting


def device_setting() -> Any:
    """The device a trainer runs on (every command takes it: a front end fills it from its own device option)."""
    return setting("cpu", "cpu, cuda or cuda:N.", shared=True)


def dtype_setting() -> Any:
    """The compute precision of a trainer (autocast; the weights stay float32)."""
    return setting(
        "auto", "Compute precision: auto (mixed precision on CUDA only), float32, float16 or bfloat16.",
        choices=DTYPE_CHOICES, shared=True,
    )  # fmt: skip


@dataclass
class TrainConfig:
    """Options shared by every trainer."""

    epochs: int = setting(10, "Passes over the training data.", minimum=1)
    batch_size: int = setting(128, "Examples per step (the others in a batch are the negatives).", minimum=2)
    lr: float = setting(1e-4, "AdamW learning rate.", minimum=0.0)
    weight_decay: float = setting(0.01, "AdamW weight decay.", minimum=0.0)
    seed: int = setting(42, "Random seed (weights, data order, dropout).")
    device: str = device_setting()
    dtype: str = dtype_setting()
    amp: bool = setting(True, "Mixed precision on CUDA (no effect on CPU; off forces float32).")
    max_steps: int | None = setting(None, "Stop after this many optimiser steps in all.", minimum=1)
    grad_clip: float | None = setting(None, "Clip the gradient norm to this value.", minimum=0.0)
    monitor: str | None = setting(
        None, "Metric summarised across seeds first (default: the validator's headline metric)."
    )
    save_every: int = setting(1, "Epochs between checkpoint writes (the last is always saved).", minimum=1)
    validate_every: int = setting(1, "Epochs between validations (the last epoch is always validated).", minimum=1)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_LOGIT_SCALE = "Scale of the cosine logits in the loss."
_DROPOUT = "Dropout in the trained network."
_LAMBDA_REG = "Weight of the concept-phrase regulariser (SEARLE's lambda_gpt; 0 turns it off)."
_TOP_K = "Concepts associated with each image."
_PROMPT = "Retrieval prompt stored for the searle / oti methods ($: the image token)."


@dataclass
class AdapterConfig(TrainConfig):
    """SIMAT adaptation heads: linear image and text heads, symmetric contrastive loss at temperature ``tau``."""

    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    tau: float = setting(0.1, "Contrastive temperature τ.", minimum=1e-4)


@dataclass
class FinetuneConfig(TrainConfig):
    """CLIP4Cir stage 1: fine-tune the encoder towers with element-wise sum + batch contrastive loss."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-6
    weight_decay: float = 0.01
    logit_scale: float = setting(100.0, _LOGIT_SCALE, minimum=0.0)
    towers: str = setting("both", "Which towers to fine-tune: both, image or text.", choices=("both", "image", "text"))
    gradient_checkpointing: bool = setting(False, "Recompute activations in the backward pass (less memory, slower).")


@dataclass
class CombinerConfig(TrainConfig):
    """CLIP4Cir stage 2: the Combiner on cached features of a frozen encoder."""

    epochs: int = 300
    save_every: int = 10
    batch_size: int = 4096
    lr: float = 2e-5
    weight_decay: float = 0.01
    logit_scale: float = setting(100.0, _LOGIT_SCALE, minimum=0.0)
    projection_dim: int | None = setting(
        None, "Width of the two input projections (default 4 × the embedding size).", minimum=1
    )
    hidden_dim: int | None = setting(None, "Hidden width (default 8 × the embedding size).", minimum=1)
    dropout: float = setting(0.5, _DROPOUT, minimum=0.0, maximum=1.0)


@dataclass
class PhiConfig(TrainConfig):
    """SEARLE's textual-inversion network phi, distilled from OTI pseudo-tokens (defaults: SEARLE README)."""

    epochs: int = 100
    save_every: int = 5
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    dropout: float = setting(0.5, _DROPOUT, minimum=0.0, maximum=1.0)
    hidden_dim: int | None = setting(None, "Hidden width (default 4 × the embedding size).", minimum=1)
    lambda_distil: float = setting(1.0, "Weight of the distillation loss.", minimum=0.0)
    lambda_reg: float = setting(0.75, _LAMBDA_REG, minimum=0.0)
    temperature: float = setting(0.25, "Temperature of the distillation loss.", minimum=1e-4)
    top_k: int = setting(150, _TOP_K, minimum=1)
    prompt: str = setting(DEFAULT_PROMPT, _PROMPT)


@dataclass
class OtiConfig(InversionSettings):
    """SEARLE's optimisation-based textual inversion over a set of images (defaults: SEARLE README)."""

    steps: int = setting(350, "Optimisation steps per image.", minimum=1)
    lr: float = setting(2e-2, "AdamW learning rate.", minimum=0.0)
    weight_decay: float = setting(0.01, "AdamW weight decay.", minimum=0.0)
    ema_decay: float = setting(
        0.99, "Decay of the exponential moving average of the token (the result).", minimum=0.0, maximum=1.0
    )
    lambda_cos: float = setting(1.0, "Weight of the image–prompt cosine loss.", minimum=0.0)
    lambda_reg: float = setting(0.5, _LAMBDA_REG, minimum=0.0)
    top_k: int = setting(15, _TOP_K, minimum=1)
    template: str = setting("a photo of $", "Prompt whose feature must match the image's.")
    batch_size: int = setting(32, "Images inverted together.", minimum=1)
    seed: int = setting(42, "Random seed.")
    device: str = device_setting()
    dtype: str = dtype_setting()
    amp: bool = setting(True, "Mixed precision on CUDA (no effect on CPU).")
    save_every: int = setting(10, "Batches between checkpoint writes (resume picks up from there).", minimum=1)
    prompt: str = setting(DEFAULT_PROMPT, _PROMPT)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def settings(self) -> InversionSettings:
        return InversionSettings.from_dict(asdict(self))


@dataclass
class LincirConfig(TrainConfig):
    """LinCIR's text-only phi (defaults after the paper where it gives them; noise and masking: see the module)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    dropout: float = setting(0.5, _DROPOUT, minimum=0.0, maximum=1.0)
    hidden_dim: int | None = setting(None, "Hidden width (default 4 × the embedding size).", minimum=1)
    noise: float = setting(0.5, "Largest scale of the Gaussian noise added to the text feature phi reads.", minimum=0)
    prompt: str = setting(DEFAULT_PROMPT, _PROMPT)
