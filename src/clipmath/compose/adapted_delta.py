"""SIMAT delta arithmetic through trained adaptation heads (method ``adapted-delta``).

Two linear maps on top of the frozen encoder: the image head for image vectors (the reference and the whole gallery),
the text head for the source/target words. They are trained by ``clipmath train adapter`` on image–caption
pairs with a symmetric contrastive loss at temperature τ, each head on its own modality.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clipmath.compose.checkpoint import Checkpoint, load_checkpoint
from clipmath.compose.delta import Delta
from clipmath.encoders.base import Encoder

KIND = "adapter"


class AdaptationHeads(nn.Module):
    """A linear image head and a linear text head, ``D → D``, initialised to the identity (= plain delta)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.image = nn.Linear(dim, dim)
        self.text = nn.Linear(dim, dim)
        for head in (self.image, self.text):
            nn.init.eye_(head.weight)
            nn.init.zeros_(head.bias)


class LinearHead:
    """A NumPy linear map ``x ↦ x·Wᵀ + b`` (what :class:`Delta` applies to embeddings)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> LinearHead:
        return cls(layer.weight.detach().float().cpu().numpy(), layer.bias.detach().float().cpu().numpy())

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32) @ self.weight.T + self.bias


class AdaptedDelta(Delta):
    @classmethod
    def from_heads(cls, heads: AdaptationHeads) -> AdaptedDelta:
        return cls(image_head=LinearHead.from_linear(heads.image), text_head=LinearHead.from_linear(heads.text))


def heads_from_checkpoint(checkpoint: Checkpoint) -> AdaptationHeads:
    heads = AdaptationHeads(checkpoint.dim)
    heads.load_state_dict(checkpoint.tensors)
    return heads


def load_adapted_delta(encoder: Encoder | None, checkpoint: str | None) -> AdaptedDelta:
    """Registry factory: the adapted delta composer from a ``clipmath train adapter`` checkpoint."""
    loaded = load_checkpoint(checkpoint or "", KIND, encoder)
    with torch.no_grad():
        return AdaptedDelta.from_heads(heads_from_checkpoint(loaded))
