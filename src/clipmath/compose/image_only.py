"""Image-only baseline: the reference image's embedding is the query (ignores the text)."""

import numpy as np

from clipmath.compose.base import Composer, QueryEmbeddings, normalise


def image_only(reference: np.ndarray) -> np.ndarray:
    return normalise(reference)


class ImageOnly(Composer):
    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        return image_only(embeddings.reference)
