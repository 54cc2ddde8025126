"""Element-wise sum (the CLIP4Cir baseline): ``normalize(normalize(img) + normalize(txt))``."""

import numpy as np

from clipmath.compose.base import Composer, QueryEmbeddings, normalise


def elementwise_sum(reference: np.ndarray, text: np.ndarray) -> np.ndarray:
    return normalise(normalise(reference) + normalise(text))


class ElementwiseSum(Composer):
    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        return elementwise_sum(embeddings.reference, embeddings.text)
