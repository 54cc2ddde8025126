"""Text-only baseline: the modification text's embedding is the query (ignores the image)."""

import numpy as np

from clipmath.compose.base import Composer, QueryEmbeddings, normalise


def text_only(text: np.ndarray) -> np.ndarray:
    return normalise(text)


class TextOnly(Composer):
    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        return text_only(embeddings.text)
