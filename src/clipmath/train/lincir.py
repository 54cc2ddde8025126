"""LinCIR: SEARLE's textual-inversion network phi trained on text only (Gu et al., "Language-only Training of
Zero-shot Composed Image Retrieval", CVPR 2024).

No image is read. Each step takes a batch of captions ``c`` and their frozen text features ``e = text(c)``; phi maps
a noisy ``e`` to a pseudo-word token, and the caption with its content words replaced by that one token
(self-masking: "a brown dog on a sofa" -> "a $ on a") must encode like ``c`` again::

    loss = mean(1 − cos(text(mask(c), $ = phi(normalise(e + s·ε))), e)),  ε ~ N(0, I/D),  s ~ U(0, noise)

The noise stands in for the gap between text and image features, so that at retrieval phi, fed an image feature,
still lands near the right token. The checkpoint is a phi checkpoint (same kind as ``clipmath train phi``), read by
the ``lincir`` method with the SEARLE prompt. The exact masking and noise are clipmath's reading of the paper.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from clipmath.compose import method_spec
from clipmath.compose.searle import PHI_KIND, Phi, SearleComposer, frozen
from clipmath.encoders.base import PLACEHOLDER, Encoder
from clipmath.train.config import LincirConfig
from clipmath.train.loop import TrainingError, TrainingTask, shuffled_batches

#: Words kept as they are when a caption is masked (everything else is content, replaced by the token).
FUNCTION_WORDS = frozenset(
    "a an the of on in at to with and or by for from into onto near next over under behind its it is are "
    "this that these those some one two three".split()
)


def mask_caption(caption: str) -> str | None:
    """The caption with its content words replaced by one ``$`` (at the first); None if it has no content word."""
    words = re.findall(r"[\w'-]+", caption.lower())
    content = [i for i, w in enumerate(words) if w not in FUNCTION_WORDS]
    if not content:
        return None
    kept = [PLACEHOLDER if i == content[0] else w for i, w in enumerate(words) if i == content[0] or i not in content]
    return " ".join(kept)


class LincirTask(TrainingTask):
    kind = PHI_KIND

    def __init__(self, encoder: Encoder, config: LincirConfig, captions: Sequence[str]) -> None:
        super().__init__(encoder, config)
        self.config: LincirConfig = config
        pairs = [(c, m) for c in captions if (m := mask_caption(c)) is not None]
        if len(pairs) < 2:
            raise TrainingError("lincir needs at least 2 captions with a content word")
        self.captions, self.masked = [c for c, _ in pairs], [m for _, m in pairs]
        with torch.no_grad():
            features = torch.as_tensor(encoder.encode_texts(self.captions))
        self.features = F.normalize(features.float(), dim=-1).to(encoder.device)
        width = encoder.token_embedding_table().embedding_dim
        self.model = Phi(encoder.dim, width, config.hidden_dim, config.dropout).to(encoder.device)
        self._generator = torch.Generator().manual_seed(config.seed)

    def num_examples(self) -> int:
        return len(self.captions)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
        self._generator = generator
        yield from shuffled_batches(len(self.captions), self.config.batch_size, generator)

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        target = self.features[rows.to(self.features.device)]
        scale = torch.rand(len(rows), 1, generator=self._generator) * self.config.noise
        noise = torch.randn(target.shape, generator=self._generator) * scale / target.shape[1] ** 0.5
        tokens = self.model(F.normalize(target + noise.to(target.device), dim=-1))
        with frozen(self.encoder):  # gradients flow through the text tower to phi only
            encoded = self.encoder.text_features_with_pseudo_tokens([self.masked[i] for i in rows.tolist()], tokens)
        return (1 - F.cosine_similarity(encoded.float(), target, dim=-1)).mean()

    def composer(self) -> SearleComposer:
        return method_spec("lincir").adopt(SearleComposer(self.model, self.config.prompt))

    def checkpoint_config(self) -> dict[str, Any]:
        return {**self.config.to_dict(), **self.model.dims}
