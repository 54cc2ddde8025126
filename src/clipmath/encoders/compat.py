"""The one check that vectors, a store or a checkpoint belong to the embedding space of the encoder in use.

Vectors of two models (or of one model with two image preparations) are not comparable, so a store, a feature cache
or a learned head made with one :class:`EmbeddingSpace` must refuse another. Every layer asks the same question here
and gets the same wording (naming models and fields, never a front end's flag).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipmath.encoders.identity import EncoderInfo
from clipmath.errors import ClipmathError, ModelLoadError

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

__all__ = ["EmbeddingSpace", "check_same_space"]


@dataclass(frozen=True)
class EmbeddingSpace:
    """What vectors were made with: the model, and optionally the image preprocessing key and the dimension."""

    model_id: str
    preprocessing: str | None = None
    dim: int | None = None

    @classmethod
    def of(cls, encoder: Encoder | EncoderInfo, preprocessing: str | None = None) -> EmbeddingSpace:
        """The space of ``encoder`` (its own preprocessing unless ``preprocessing`` is given or it is an info)."""
        if isinstance(encoder, EncoderInfo):
            return cls(encoder.model_id, preprocessing, encoder.dim)
        return cls(encoder.info.model_id, preprocessing or encoder.transform.key, encoder.info.dim)


def check_same_space(
    made_with: EmbeddingSpace,
    in_use: EmbeddingSpace,
    what: str,
    *,
    verb: str = "holds embeddings of",
    error: type[ClipmathError] = ModelLoadError,
    hint: str = "",
) -> None:
    """Raise ``error`` if ``in_use`` differs from ``made_with`` (fields that either side leaves ``None`` are not
    compared). ``what`` names the thing checked ("the store", "checkpoint runs/c"); ``hint`` ends the message."""
    tail = f" ({hint})" if hint else ""
    if made_with.model_id != in_use.model_id:
        raise error(
            f"{what} {verb} model '{made_with.model_id}', but the model in use is '{in_use.model_id}': "
            f"vectors of two models cannot be mixed{tail}"
        )
    if made_with.dim is not None and in_use.dim is not None and made_with.dim != in_use.dim:
        raise error(f"{what} holds {made_with.dim}-d vectors, but the model in use is {in_use.dim}-d{tail}")
    if made_with.preprocessing and in_use.preprocessing and made_with.preprocessing != in_use.preprocessing:
        raise error(
            f"{what} was built with preprocessing '{made_with.preprocessing}', "
            f"but the model in use prepares images with '{in_use.preprocessing}'{tail}"
        )
