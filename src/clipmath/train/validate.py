"""Validation hooks for the training loop: ``validator(composer) -> {metric: value}`` (higher is better, except
``mean_rank``).

:class:`RetrievalValidator` scores composed queries against a gallery of image files (Recall@K, mean rank of the
target), which is what the learning checks and ``clipmath train … --val-triplets`` use; a benchmark's own evaluation
(``clipmath eval``) plugs into the same hook. :class:`CaptionValidator` scores SIMAT heads by caption→image
retrieval on held-out captioned images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from clipmath.compose.base import Composer, CompositionQuery, normalise
from clipmath.encoders.base import Encoder
from clipmath.train.data import CaptionedImage, Triplet
from clipmath.train.features import FeatureCache


def retrieval_metrics(
    queries: np.ndarray,
    gallery: np.ndarray,
    target_rows: Sequence[int],
    exclude_rows: Sequence[int | None] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K and mean rank (1 = first) of each query's target row among the gallery rows."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(gallery, dtype=np.float32).T
    rows = np.arange(len(scores))
    if exclude_rows is not None:
        for i, row in enumerate(exclude_rows):
            if row is not None and row != target_rows[i]:
                scores[i, row] = -np.inf
    target_scores = scores[rows, np.asarray(target_rows)]
    ranks = (scores > target_scores[:, None]).sum(axis=1)  # 0 = best
    metrics = {f"recall@{k}": float((ranks < k).mean()) for k in ks}
    metrics["mean_rank"] = float(ranks.mean() + 1)
    return metrics


class RetrievalValidator:
    """Composed queries with known target images, ranked against a gallery of image files.

    References and targets must be gallery files; a reference is never counted as a hit for its own query.
    ``reencode``: encode the gallery again at every call (needed while the encoder itself is being fine-tuned).
    """

    def __init__(
        self,
        encoder: Encoder,
        queries: Sequence[CompositionQuery],
        targets: Sequence[str | Path],
        gallery: Sequence[str | Path],
        ks: Sequence[int] = (1, 5, 10),
        reencode: bool = False,
        cache: FeatureCache | None = None,
    ) -> None:
        self.encoder = encoder
        self.gallery = [Path(p) for p in gallery]
        row_of = {p.resolve(): i for i, p in enumerate(self.gallery)}
        missing = [t for t in targets if Path(t).resolve() not in row_of]
        if missing:
            raise ValueError(f"{len(missing)} target image(s) are not in the validation gallery, e.g. {missing[0]}")
        self.target_rows = [row_of[Path(t).resolve()] for t in targets]
        self.reference_rows = [
            row_of.get(Path(q.reference).resolve()) if isinstance(q.reference, (str, Path)) else None for q in queries
        ]
        self.queries = list(queries)
        self.ks = tuple(ks)
        self.reencode = reencode
        self.cache = cache
        self._vectors: np.ndarray | None = None

    @classmethod
    def from_triplets(
        cls,
        encoder: Encoder,
        triplets: Sequence[Triplet],
        gallery: Sequence[str | Path] | None = None,
        **kwargs,
    ) -> RetrievalValidator:
        """Queries (reference + caption) from triplets; the gallery defaults to all their images."""
        if gallery is None:
            gallery = list(dict.fromkeys(p for t in triplets for p in (t.reference, t.target)))
        queries = [CompositionQuery(reference=t.reference, text=t.caption) for t in triplets]
        return cls(encoder, queries, [t.target for t in triplets], gallery, **kwargs)

    def gallery_vectors(self) -> np.ndarray:
        if self.reencode or self._vectors is None:
            if self.reencode or self.cache is None:
                self._vectors = FeatureCache(self.encoder, progress=False).images(self.gallery).numpy()
            else:
                self._vectors = self.cache.images(self.gallery).numpy()
        return self._vectors

    def __call__(self, composer: Composer) -> dict[str, float]:
        vectors = self.gallery_vectors()
        queries = [  # references in the gallery reuse its vectors instead of being encoded again
            replace(q, reference=vectors[row]) if row is not None else q
            for q, row in zip(self.queries, self.reference_rows)
        ]
        query_vectors = composer.compose(self.encoder, queries)
        return retrieval_metrics(
            query_vectors, composer.transform_gallery(vectors), self.target_rows, self.reference_rows, self.ks
        )


class CaptionValidator:
    """Caption → image retrieval on held-out captioned images, through a composer's heads (SIMAT adapters).

    Uses the composer's ``text_head`` (if any) on caption features and its gallery transform on image features.
    """

    def __init__(self, encoder: Encoder, items: Sequence[CaptionedImage], ks: Sequence[int] = (1, 5, 10)) -> None:
        cache = FeatureCache(encoder, progress=False)
        self.images = cache.images([item.path for item in items]).numpy()
        self.captions = cache.texts([c for item in items for c in item.captions]).numpy()
        self.owner = [i for i, item in enumerate(items) for _ in item.captions]
        self.ks = tuple(ks)

    def __call__(self, composer: Composer) -> dict[str, float]:
        head = getattr(composer, "text_head", None)
        captions = normalise(head(self.captions)) if head is not None else self.captions
        return retrieval_metrics(captions, composer.transform_gallery(self.images), self.owner, ks=self.ks)
