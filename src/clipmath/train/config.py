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


@dataclass
class TrainConfig:
    """Options shared by every trainer."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.01
    seed: int = 42
    device: str = "cpu"
    dtype: str = "auto"  # compute precision: auto (mixed precision on CUDA only) | float32 | float16 | bfloat16
    amp: bool = True  # False forces float32 (the old switch; ``dtype`` is the setting now)
    max_steps: int | None = None  # stop after this many optimiser steps in all (smoke runs)
    grad_clip: float | None = None  # clip the gradient norm to this value
    monitor: str | None = None  # the validation metric summarised across seeds (default: the first reported)
    save_every: int = 1  # epochs between checkpoint writes (the last epoch is always written)
    validate_every: int = 1  # epochs between validations (the last epoch is always validated)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class AdapterConfig(TrainConfig):
    """SIMAT adaptation heads: linear image and text heads, symmetric contrastive loss at temperature ``tau``."""

    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    tau: float = 0.1


@dataclass
class FinetuneConfig(TrainConfig):
    """CLIP4Cir stage 1: fine-tune the encoder towers with element-wise sum + batch contrastive loss."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-6
    weight_decay: float = 0.01
    logit_scale: float = 100.0
    towers: str = "both"  # both | image | text
    gradient_checkpointing: bool = False


@dataclass
class CombinerConfig(TrainConfig):
    """CLIP4Cir stage 2: the Combiner on cached features of a frozen encoder."""

    epochs: int = 300
    save_every: int = 10
    batch_size: int = 4096
    lr: float = 2e-5
    weight_decay: float = 0.01
    logit_scale: float = 100.0
    projection_dim: int | None = None  # default 4·D
    hidden_dim: int | None = None  # default 8·D
    dropout: float = 0.5


@dataclass
class PhiConfig(TrainConfig):
    """SEARLE's textual-inversion network phi, distilled from OTI pseudo-tokens (defaults: SEARLE README)."""

    epochs: int = 100
    save_every: int = 5
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    dropout: float = 0.5
    hidden_dim: int | None = None  # default 4·D
    lambda_distil: float = 1.0
    lambda_reg: float = 0.75  # SEARLE's lambda_gpt
    temperature: float = 0.25
    top_k: int = 150  # concepts associated with each image
    prompt: str = DEFAULT_PROMPT


@dataclass
class OtiConfig(InversionSettings):
    """SEARLE's optimisation-based textual inversion over a set of images (defaults: SEARLE README)."""

    seed: int = 42
    device: str = "cpu"
    dtype: str = "auto"
    amp: bool = True
    save_every: int = 10  # batches between checkpoint writes (resume picks up from there)
    prompt: str = DEFAULT_PROMPT
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def settings(self) -> InversionSettings:
        return InversionSettings.from_dict(asdict(self))
