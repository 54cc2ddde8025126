"""The composition interface: every method turns a batch of :class:`CompositionQuery` into query vectors.

A method does two things: gather the embeddings it needs (:func:`embed_queries`, shared by all methods, batched)
and combine them with a pure function of NumPy arrays (one per method file). Learned methods may also transform
gallery vectors (:meth:`Composer.transform_gallery`), e.g. SIMAT's image adaptation head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image

from clipmath.compose.values import check_weight, clean_text
from clipmath.errors import ComposeError
from clipmath.vectors import l2_normalise

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

#: An image given as a PIL image, a file path, or an already computed embedding ``(D,)``.
ImageInput = Union[Image.Image, str, Path, np.ndarray]


@dataclass
class Term:
    """One weighted operand of an arithmetic expression: an image or a text.

    ``image_id``: the gallery id of the image when it is known (e.g. the image was given as a stored vector);
    the image is then excluded from the query's results like a reference image.
    """

    weight: float
    image: ImageInput | None = None
    text: str | None = None
    image_id: str | None = None

    def __post_init__(self) -> None:
        if (self.image is None) == (self.text is None):
            raise ComposeError("an expression term holds exactly one of an image or a text", field="expression")
        self.weight = check_weight(self.weight, "weight")
        if self.text is not None:
            self.text = clean_text(str(self.text))


@dataclass
class CompositionQuery:
    """Everything a user can give for one query; each method says which fields it needs.

    ``reference``: the reference image; ``text``: the modification text ("is red and has long sleeves");
    ``source``/``target`` and ``lam``: SIMAT delta words (``cat`` → ``dog``, λ); ``terms``: a weighted expression.
    ``reference_id``: the gallery id of the reference, excluded from results when set.

    ``lam`` must be finite and within ±:data:`~clipmath.compose.values.MAX_WEIGHT`; texts are cleaned of lone
    surrogates (see :mod:`clipmath.compose.values`). Build one from plain fields with
    :func:`clipmath.compose.build_query`.
    """

    reference: ImageInput | None = None
    text: str | None = None
    source: str | None = None
    target: str | None = None
    lam: float = 1.0
    terms: list[Term] = field(default_factory=list)
    reference_id: str | None = None

    def __post_init__(self) -> None:
        self.lam = check_weight(self.lam, "lam")
        for name in ("text", "source", "target"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, clean_text(str(value)))


@dataclass
class QueryEmbeddings:
    """Batched, L2-normalised embeddings of the fields a method asked for (``None`` where not asked)."""

    reference: np.ndarray | None = None
    text: np.ndarray | None = None
    source: np.ndarray | None = None
    target: np.ndarray | None = None
    lam: np.ndarray | None = None


FIELDS = ("reference", "text", "source", "target")
#: How an error names each query field a method may need.
FIELD_WORDS = {
    "reference": "a reference image ('reference')",
    "text": "a modification text ('text')",
    "source": "the 'source' text",
    "target": "the 'target' text",
    "terms": "an 'expression'",
}
#: The user-facing field name of each query field (an expression is given as text, held as terms).
FIELD_NAMES = {"terms": "expression"}


class Composer(ABC):
    """A composition method: subclasses implement :meth:`combine`; ``name`` and ``needs`` are set from its
    :class:`~clipmath.compose.methods.MethodSpec` when :func:`~clipmath.compose.get_composer` makes it."""

    name: str = ""
    needs: tuple[str, ...] = ()
    description: str = ""

    def compose(self, encoder: Encoder, queries: Sequence[CompositionQuery], batch_size: int = 64) -> np.ndarray:
        """Query vectors ``(B, D)``, L2-normalised, for a batch of queries."""
        if not queries:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return l2_normalise(self.combine(embed_queries(encoder, queries, self.needs, self.name, batch_size)))

    @abstractmethod
    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        """The method itself: a pure function of the gathered embeddings."""

    def transform_gallery(self, vectors: np.ndarray) -> np.ndarray:
        """Map gallery vectors into the space the queries live in (identity for zero-shot methods)."""
        return vectors

    @property
    def transforms_gallery(self) -> bool:
        return type(self).transform_gallery is not Composer.transform_gallery


def embed_queries(
    encoder: Encoder,
    queries: Sequence[CompositionQuery],
    needs: Sequence[str],
    method: str = "",
    batch_size: int = 64,
) -> QueryEmbeddings:
    """Encode, in batches, the fields ``needs`` of every query; a missing field is a :class:`ComposeError`."""
    out = QueryEmbeddings()
    for name in needs:
        if name == "lam":
            out.lam = np.array([q.lam for q in queries], dtype=np.float32)
            continue
        values = [getattr(q, name) for q in queries]
        missing = [i for i, v in enumerate(values) if _absent(v)]
        if missing:
            raise missing_input(method, name, missing[0])
        if name == "reference":
            out.reference = encode_image_inputs(encoder, values, batch_size)
        else:
            out.__setattr__(name, encoder.encode_texts([str(v) for v in values], batch_size=batch_size))
    return out


def encode_image_inputs(encoder: Encoder, images: Sequence[ImageInput], batch_size: int = 64) -> np.ndarray:
    """Embeddings ``(N, D)`` for images given as PIL images, paths or precomputed vectors (kept as given)."""
    result: list[np.ndarray | None] = [None] * len(images)
    to_encode: list[tuple[int, Image.Image]] = []
    for i, item in enumerate(images):
        if isinstance(item, np.ndarray):
            vector = item.astype(np.float32).reshape(-1)
            if vector.shape[0] != encoder.dim:
                raise ComposeError(f"embedding has dimension {vector.shape[0]}, the model's is {encoder.dim}")
            result[i] = vector
        else:
            to_encode.append((i, open_image(item) if not isinstance(item, Image.Image) else item))
    if to_encode:
        encoded = encoder.encode_images([img for _, img in to_encode], batch_size=batch_size)
        for (i, _), vector in zip(to_encode, encoded):
            result[i] = vector
    return l2_normalise(np.stack(result))  # type: ignore[arg-type]


def open_image(path: str | Path) -> Image.Image:
    """Open an image file for a query, with a one-line error for a missing or undecodable file."""
    from clipmath.imageio import ImageDecodeError, decode_image

    shown = clean_text(str(path))  # a file name may hold bytes that are not UTF-8: never echo them raw
    try:
        return decode_image(Path(path))
    except FileNotFoundError:
        raise ComposeError(f"image not found: {shown}") from None
    except ImageDecodeError as exc:
        raise ComposeError(f"cannot read image {shown}: {exc}") from None
    except (ValueError, OSError) as exc:  # a NUL byte in the name, a name too long for the file system...
        raise ComposeError(f"not a usable image path: {shown!r} ({exc})") from None


#: Row-wise L2 normalisation (zero rows stay zero); the one helper lives in :mod:`clipmath.vectors`.
normalise = l2_normalise


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def check_needs(method: str, needs: Sequence[str], query: CompositionQuery) -> None:
    """Raise the :func:`missing_input` error for the first field of ``needs`` that ``query`` lacks (before any
    encoding: what a front end checks when a request arrives)."""
    for name in needs:
        if name != "lam" and _absent(getattr(query, name)):
            raise missing_input(method, name)


def missing_input(method: str, field_name: str, query_index: int | None = None) -> ComposeError:
    """The error for a query that lacks a field its method needs, naming the field (never a front end's flag)."""
    words = FIELD_WORDS.get(field_name, f"the '{field_name}' field")
    where = f" (missing for query {query_index})" if query_index is not None else ""
    return ComposeError(f"method '{method}' needs {words}{where}", field=FIELD_NAMES.get(field_name, field_name))
