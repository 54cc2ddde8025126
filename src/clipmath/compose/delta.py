"""SIMAT delta arithmetic: ``normalize(img) + λ·(normalize(t_target) − normalize(t_source))``.

With adaptation heads (linear maps trained on image–caption pairs, see ``clipmath.train.adapter``), image vectors
pass through the image head and word vectors through the text head before normalisation, and the gallery is mapped
by the image head too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from clipmath.compose.base import Composer, QueryEmbeddings, normalise

Head = Callable[[np.ndarray], np.ndarray]


def delta(reference: np.ndarray, source: np.ndarray, target: np.ndarray, lam: float | np.ndarray = 1.0) -> np.ndarray:
    """The SIMAT transformation of ``reference`` by the word pair ``source`` → ``target`` (result not normalised)."""
    lam = np.asarray(lam, dtype=np.float32).reshape(-1, 1) if np.ndim(lam) else np.float32(lam)
    return normalise(reference) + lam * (normalise(target) - normalise(source))


class Delta(Composer):
    def __init__(self, image_head: Head | None = None, text_head: Head | None = None) -> None:
        self.image_head = image_head
        self.text_head = text_head

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        reference, source, target = embeddings.reference, embeddings.source, embeddings.target
        if self.image_head is not None:
            reference = self.image_head(reference)
        if self.text_head is not None:
            source, target = self.text_head(source), self.text_head(target)
        return delta(reference, source, target, embeddings.lam)

    def transform_gallery(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.image_head is None else normalise(self.image_head(vectors))

    @property
    def transforms_gallery(self) -> bool:
        return self.image_head is not None
