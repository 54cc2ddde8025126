"""SIMAT adaptation heads: linear maps on frozen features, aligned by a symmetric contrastive loss at temperature τ.

Each head sees its own modality: the image head maps image features, the text head caption features. (The original
SIMAT ``adaptation.py`` fed image features to the text head as well; that defect is not reproduced.) Each epoch
visits every image once with one of its captions drawn at random, so an image's other captions are never in-batch
negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.nn import functional as F

from clipmath.compose import method_spec
from clipmath.compose.adapted_delta import KIND, AdaptationHeads, AdaptedDelta
from clipmath.encoders.base import Encoder
from clipmath.errors import DatasetError
from clipmath.train.config import AdapterConfig
from clipmath.train.data import CaptionedImage
from clipmath.train.features import FeatureCache
from clipmath.train.loop import TrainingTask


def symmetric_contrastive_loss(images: torch.Tensor, texts: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean of image→text and text→image cross-entropy over cosine logits ``/ tau`` (matching rows are pairs)."""
    logits = F.normalize(images.float(), dim=-1) @ F.normalize(texts.float(), dim=-1).T / tau
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class AdapterTask(TrainingTask):
    kind = KIND

    def __init__(
        self,
        encoder: Encoder,
        config: AdapterConfig,
        image_features: torch.Tensor,
        caption_features: torch.Tensor,
        caption_owner: torch.Tensor,
    ) -> None:
        super().__init__(encoder, config)
        self.config: AdapterConfig = config
        device = encoder.device
        self.image_features = image_features.to(device)
        self.caption_features = caption_features.to(device)
        # captions grouped by image: image i owns by_image[starts[i] : starts[i] + counts[i]]
        self.by_image = torch.argsort(caption_owner, stable=True)
        self.counts = torch.bincount(caption_owner, minlength=len(image_features))
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        if bool((self.counts == 0).any()):
            raise DatasetError("every training image needs at least one caption")
        self.model = AdaptationHeads(encoder.dim).to(device)

    def num_examples(self) -> int:
        return len(self.image_features)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
        order = torch.randperm(len(self.image_features), generator=generator)
        size = max(2, min(self.config.batch_size, len(order)))
        for start in range(0, len(order) - 1, size):  # a lone last image has no negatives: skip it
            rows = order[start : start + size]
            if len(rows) < 2:
                continue
            offsets = (torch.rand(len(rows), generator=generator) * self.counts[rows]).long()
            picks = self.by_image[self.starts[rows] + offsets].to(self.caption_features.device)
            yield len(rows), (self.image_features[rows.to(self.image_features.device)], self.caption_features[picks])

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, texts = batch
        return symmetric_contrastive_loss(self.model.image(images), self.model.text(texts), self.config.tau)

    def composer(self) -> AdaptedDelta:
        return method_spec("adapted-delta").adopt(AdaptedDelta.from_heads(self.model))


def adapter_task_factory(
    encoder: Encoder, data: Sequence[CaptionedImage], cache: FeatureCache | None = None
) -> Callable[[AdapterConfig], AdapterTask]:
    """Encode the images and captions once; the returned factory builds a fresh task per config (seed)."""
    cache = cache or FeatureCache(encoder)
    image_features = cache.images([item.path for item in data])
    captions = [c for item in data for c in item.captions]
    owner = torch.tensor([i for i, item in enumerate(data) for _ in item.captions])
    caption_features = cache.texts(captions)
    return lambda config: AdapterTask(encoder, config, image_features, caption_features, owner)
