"""Small NumPy helpers on embedding vectors, shared by every layer (this module imports nothing from clipmath)."""

from __future__ import annotations

import numpy as np

__all__ = ["l2_normalise"]


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise (last axis) L2 normalisation as float32; rows of zeros stay zeros instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)
