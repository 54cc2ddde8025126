"""The end-to-end retrieval API: a store + its encoder + an index, answering composed queries.

>>> from clipmath import Retriever, CompositionQuery
>>> retriever = Retriever.open("gallery.store")
>>> hits = retriever.search([CompositionQuery(reference="cat.jpg", source="cat", target="dog")], method="delta")
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clipmath.compose import Composer, CompositionQuery, get_composer
from clipmath.encoders import EmbeddingSpace, Encoder, ImageTransform, check_same_space, load_encoder
from clipmath.errors import ComposeError, StoreError
from clipmath.search import IndexParams, SearchHit, VectorIndex, exclusions_for, make_index, open_index
from clipmath.store import Gallery, GallerySnapshot
from clipmath.store.controls import MetaColumns, QueryControls, ResultPage, controlled_search, is_approximate
from clipmath.store.photometa import PhotoMeta, all_photo_meta


@dataclass(frozen=True)
class RetrieverConfig:
    index: str = "exact"
    faiss: IndexParams = IndexParams()
    exclude_reference: bool = True


class Retriever:
    """Thread-safe: the encoder and index are loaded once; :meth:`refresh` picks up newly committed vectors."""

    def __init__(self, gallery: Gallery, encoder: Encoder, config: RetrieverConfig | None = None) -> None:
        check_same_space(
            EmbeddingSpace(gallery.model_id, gallery.meta["preprocessing"]),
            EmbeddingSpace.of(encoder),
            "the store",
            error=StoreError,
        )
        self.gallery = gallery
        self.encoder = encoder
        self.config = config or RetrieverConfig()
        self._lock = threading.RLock()
        self._composers: dict[tuple[str, str | None], Composer] = {}
        self._transformed: dict[tuple[str, str | None], VectorIndex] = {}
        self._metadata: tuple[str | None, dict[str, PhotoMeta]] = (None, {})
        self._meta_columns: tuple[str | None, MetaColumns | None] = (None, None)
        self.snapshot: GallerySnapshot
        self.index: VectorIndex
        self._load()

    @classmethod
    def open(
        cls,
        store: str | Path,
        model: str | None = None,
        device: str = "cpu",
        config: RetrieverConfig | None = None,
        dtype: str = "auto",
    ) -> Retriever:
        """Open a store with the model it was built with (or ``model``, which must be the same one), in ``dtype``."""
        gallery = Gallery.open(store)
        name = model or gallery.model_id
        if name.startswith("local:") and model is None:
            raise StoreError(f"{store} was built with a local model folder ({name}): give that folder as the model")
        transform = ImageTransform.from_key(gallery.meta["preprocessing"])
        encoder = load_encoder(
            name, device=device, preprocessing=transform.mode, target_ratio=transform.target_ratio, dtype=dtype
        )
        return cls(gallery, encoder, config)

    # ---- state --------------------------------------------------------------------------------------
    def _load(self) -> None:
        snapshot = self.gallery.snapshot()
        index = self._open_index(snapshot)
        with self._lock:
            self.snapshot, self.index = snapshot, index
            self._transformed.clear()

    def refresh(self) -> bool:
        """Reload if the store changed since the last load; returns whether it did."""
        current = self.gallery.snapshot()
        if current.state == self.snapshot.state:
            return False
        self._load()
        return True

    def _open_index(self, snapshot: GallerySnapshot) -> VectorIndex:
        identity = {"model_id": self.gallery.model_id, "dim": self.gallery.dim}
        identity["preprocessing"] = self.gallery.meta["preprocessing"]
        return open_index(
            snapshot.vectors,
            self.config.index,
            self.config.faiss,
            self.gallery.path,
            snapshot.state,
            ids=snapshot.ids,
            identity=identity,
        )

    # ---- queries ------------------------------------------------------------------------------------
    def composer(self, method: str, checkpoint: str | None = None) -> Composer:
        key = (method, checkpoint)
        with self._lock:
            if key not in self._composers:
                self._composers[key] = get_composer(method, self.encoder, checkpoint)
            return self._composers[key]

    def query_vectors(
        self, queries: Sequence[CompositionQuery], method: str = "sum", checkpoint: str | None = None
    ) -> np.ndarray:
        return self.composer(method, checkpoint).compose(self.encoder, queries)

    def search(
        self,
        queries: Sequence[CompositionQuery],
        method: str = "sum",
        k: int = 10,
        checkpoint: str | None = None,
        where: object | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` gallery hits per query.

        A query's reference image and its expression's images are excluded when they are in the gallery (unless
        the config says otherwise). ``k`` beyond the gallery's size returns the whole gallery. ``where`` (a
        :class:`clipmath.search.milvus.SearchFilter`) is answered by an index that takes filters (``milvus:URI``).
        ``timings``, when given, receives the milliseconds spent composing (``encode_ms``: encoding and combining)
        and searching (``search_ms``), for all queries together.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ComposeError(f"'k' must be a whole number of at least 1, not {k!r}", field="k")
        composer = self.composer(method, checkpoint)
        started = time.perf_counter()
        vectors, snapshot, index, exclude, queries = self._prepare(queries, method, checkpoint)
        composed = time.perf_counter()
        k = max(1, min(int(k), len(snapshot)))  # never allocate by a k larger than the gallery
        if where:
            self._check_where(composer)
            hits = index.search(vectors, k, exclude, where=where).hits(snapshot.ids)
        elif hasattr(composer, "gallery_scores"):
            # A method scoring the gallery its own way (SEIZE) re-scores a shortlist found by its query vector.
            shortlist = index.search(vectors, min(len(snapshot), max(10 * k, 100)), exclude)
            hits = [
                self._rescored(composer, query, rows[rows >= 0], snapshot, k)
                for query, rows in zip(queries, shortlist.rows)
            ]
        else:
            hits = index.search(vectors, k, exclude).hits(snapshot.ids)
        if timings is not None:
            timings["encode_ms"] = (composed - started) * 1000
            timings["search_ms"] = (time.perf_counter() - composed) * 1000  # a re-scoring method's rescoring too
        return hits

    def _rescored(self, composer: Composer, query: CompositionQuery, rows: np.ndarray, snapshot, k: int):
        scores = composer.gallery_scores(self.encoder, [query], np.asarray(snapshot.vectors[rows]))[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [SearchHit(snapshot.ids[int(rows[i])], float(scores[i]), rank) for rank, i in enumerate(order)]

    def explain(
        self, queries: Sequence[CompositionQuery], method: str, checkpoint: str | None = None
    ) -> list[dict] | None:
        """What made each query, for methods that can say (the captions and rewrites of ``cirevl``…), else None."""
        composer = self.composer(method, checkpoint)
        if not hasattr(composer, "explain"):
            return None
        return composer.explain(self.encoder, [self.resolve_gallery_references(q) for q in queries])

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> tuple[GallerySnapshot, list[list[SearchHit]]]:
        """Top-``k`` hits of query vectors ``(Q, D)`` (already in the store's space), with the snapshot searched."""
        with self._lock:
            snapshot, index = self.snapshot, self.index
        k = max(1, min(int(k), len(snapshot)))
        return snapshot, index.search(np.asarray(vectors, dtype=np.float32), k, None).hits(snapshot.ids)

    def search_page(
        self,
        query: CompositionQuery,
        controls: QueryControls,
        method: str = "sum",
        k: int = 10,
        checkpoint: str | None = None,
        where: object | None = None,
    ) -> ResultPage:
        """One page of ``k`` hits for ``query`` under ``controls`` (cutoff, sort, filters, offset), each hit with
        its photo metadata in :attr:`metadata` (see :mod:`clipmath.store.controls`). ``where``: a filter the index
        answers itself (a :class:`clipmath.search.milvus.SearchFilter` for ``milvus:URI``), applied first."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ComposeError(f"'k' must be a whole number of at least 1, not {k!r}", field="k")
        if where is not None:
            self._check_where(self.composer(method, checkpoint))
        vectors, snapshot, index, exclude, _ = self._prepare([query], method, checkpoint)
        metas, columns = self.metadata(), self._columns(snapshot)
        approximate = is_approximate(index)
        rows = exclude[0] if exclude else []
        gallery = getattr(index, "vectors", None)
        gallery = snapshot.vectors if gallery is None else gallery
        return controlled_search(
            index, snapshot.ids, vectors[0], int(k), controls, metas, rows, approximate, gallery, columns, where
        )

    def _check_where(self, composer: Composer) -> None:
        """A filter the index answers needs an index that takes one, and the gallery as stored."""
        if composer.transforms_gallery or "where" not in inspect.signature(self.index.search).parameters:
            raise ComposeError("filters are answered by a milvus:URI index (this search has none)", field="where")

    def metadata(self) -> dict[str, PhotoMeta]:
        """``id -> PhotoMeta`` of the loaded snapshot (read once per committed state)."""
        with self._lock:
            state = self.snapshot.state
            if self._metadata[0] != state:
                self._metadata = (state, all_photo_meta(self.gallery))
            return self._metadata[1]

    def _columns(self, snapshot: GallerySnapshot) -> MetaColumns:
        """The snapshot's metadata as arrays for vectorised filters (built once per committed state)."""
        metas = self.metadata()
        with self._lock:
            if self._meta_columns[0] != snapshot.state:
                self._meta_columns = (snapshot.state, MetaColumns.of(snapshot.ids, metas))
            return self._meta_columns[1]

    def _prepare(
        self, queries: Sequence[CompositionQuery], method: str, checkpoint: str | None
    ) -> tuple[np.ndarray, GallerySnapshot, VectorIndex, list[list[int]] | None, list[CompositionQuery]]:
        """The query vectors, the snapshot and index to search, the rows each query excludes, and the queries with
        their gallery references resolved."""
        composer = self.composer(method, checkpoint)
        excluded = [self.excluded_ids(q) for q in queries] if self.config.exclude_reference else None
        queries = [self.resolve_gallery_references(q) for q in queries]
        vectors = composer.compose(self.encoder, queries)
        with self._lock:
            snapshot, index = self.snapshot, self.index
            if composer.transforms_gallery:
                key = (method, checkpoint)
                if key not in self._transformed:
                    self._transformed[key] = make_index(composer.transform_gallery(np.asarray(snapshot.vectors)))
                index = self._transformed[key]
        return vectors, snapshot, index, exclusions_for(snapshot.ids, excluded) if excluded else None, queries

    def resolve_gallery_references(self, query: CompositionQuery) -> CompositionQuery:
        """Image operands naming a gallery id (not an existing file) use the stored vector, no re-encoding."""
        snapshot = self.snapshot

        def resolve(image: object) -> object:
            if not isinstance(image, (str, Path)) or _exists(image):
                return image
            row = snapshot.row_of(Path(image).as_posix())
            return image if row is None else np.asarray(snapshot.vectors[row])

        terms = [
            replace(t, image=resolve(t.image), image_id=t.image_id or self.gallery_id(t.image))
            if t.image is not None
            else t
            for t in query.terms
        ]
        reference_id = query.reference_id or self.gallery_id(query.reference)
        return replace(query, reference=resolve(query.reference), terms=terms, reference_id=reference_id)

    def excluded_ids(self, query: CompositionQuery) -> list[str]:
        """Gallery ids a query must not return: its reference image and the images of its expression terms."""
        candidates = [query.reference_id or self.gallery_id(query.reference)]
        candidates += [term.image_id or self.gallery_id(term.image) for term in query.terms if term.image is not None]
        return [c for c in candidates if c]

    def gallery_id(self, image: object) -> str | None:
        """The gallery id an image operand names: a gallery id itself, or a path to one of the gallery's files."""
        if not isinstance(image, (str, Path)):
            return None
        snapshot = self.snapshot
        name = Path(image).as_posix()
        if snapshot.row_of(name) is not None and not _exists(image):
            return name
        try:
            name = Path(image).resolve().relative_to(snapshot.root.resolve()).as_posix()
        except (ValueError, OSError):  # outside the gallery, or not a usable path (NUL byte, too long, a loop)
            return None
        return name if snapshot.row_of(name) is not None else None

    def path_of(self, item_id: str) -> Path:
        return self.snapshot.path_of(item_id)


def _exists(path: str | Path) -> bool:
    """Whether ``path`` names an existing file; names no file system accepts (a NUL byte, too long) do not."""
    try:
        return Path(path).exists()
    except (ValueError, OSError):
        return False
