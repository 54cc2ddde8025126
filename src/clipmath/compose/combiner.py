"""The CLIP4Cir Combiner (method ``combiner``): a learned, gated fusion of image and text features.

For a reference image feature ``i`` and a modification-text feature ``t`` (both L2-normalised)::

    p = [relu(P_t·t), relu(P_i·i)]              two projections, concatenated
    λ = sigmoid(MLP_λ(p))                       a per-query mixing weight in (0, 1)
    v = W_out·relu(W_mix·p)                     a learned residual
    query = normalize((1 − λ)·i + λ·t + v)

It is trained by ``clipmath train combiner`` on cached features of the (optionally fine-tuned) encoder, with a
batch contrastive loss against the target images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clipmath.compose.base import Composer, QueryEmbeddings
from clipmath.compose.checkpoint import Checkpoint, load_checkpoint
from clipmath.encoders.base import Encoder

KIND = "combiner"


class Combiner(nn.Module):
    """CLIP4Cir's Combiner network on ``dim``-d features (defaults: projection 4·dim, hidden 8·dim)."""

    def __init__(
        self, dim: int, projection_dim: int | None = None, hidden_dim: int | None = None, dropout: float = 0.5
    ) -> None:
        super().__init__()
        projection_dim = projection_dim or 4 * dim
        hidden_dim = hidden_dim or 8 * dim
        self.dims = {"dim": dim, "projection_dim": projection_dim, "hidden_dim": hidden_dim, "dropout": dropout}
        self.text_projection = nn.Linear(dim, projection_dim)
        self.image_projection = nn.Linear(dim, projection_dim)
        self.text_dropout = nn.Dropout(dropout)
        self.image_dropout = nn.Dropout(dropout)
        self.mix = nn.Linear(2 * projection_dim, hidden_dim)
        self.mix_dropout = nn.Dropout(dropout)
        self.residual = nn.Linear(hidden_dim, dim)
        self.gate = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Normalised query features ``(B, dim)`` from image and text features ``(B, dim)``."""
        projected = torch.cat(
            [
                self.text_dropout(F.relu(self.text_projection(text))),
                self.image_dropout(F.relu(self.image_projection(image))),
            ],
            dim=-1,
        )
        residual = self.residual(self.mix_dropout(F.relu(self.mix(projected))))
        weight = self.gate(projected)
        return F.normalize((1 - weight) * image + weight * text + residual, dim=-1)


class CombinerComposer(Composer):
    def __init__(self, combiner: Combiner) -> None:
        self.combiner = combiner

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        module = self.combiner
        parameter = next(module.parameters())
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                image = torch.from_numpy(np.asarray(embeddings.reference, dtype=np.float32)).to(parameter.device)
                text = torch.from_numpy(np.asarray(embeddings.text, dtype=np.float32)).to(parameter.device)
                return module(image.to(parameter.dtype), text.to(parameter.dtype)).float().cpu().numpy()
        finally:
            module.train(was_training)


def combiner_from_checkpoint(checkpoint: Checkpoint) -> Combiner:
    config = checkpoint.config
    module = Combiner(
        checkpoint.dim, config.get("projection_dim"), config.get("hidden_dim"), float(config.get("dropout", 0.5))
    )
    module.load_state_dict(checkpoint.tensors)
    return module.eval()


def load_combiner(encoder: Encoder | None, checkpoint: str | None) -> CombinerComposer:
    """Registry factory: the Combiner composer from a ``clipmath train combiner`` checkpoint."""
    return CombinerComposer(combiner_from_checkpoint(load_checkpoint(checkpoint or "", KIND, encoder)))
