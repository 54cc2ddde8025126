"""The photo-library routes: one page of a composed search under :class:`QueryControls` (cutoff, sort, filters,
paging; the same dataclass the CLI reads), each hit with its photo metadata; "more like this" from a stored vector
(no re-encoding); the controls themselves, described for a front end; near-duplicate groups.

Image operands (the reference and an expression's images) are gallery ids, resolved to their stored vectors, or
earlier uploads (``{"upload_id": ...}`` as the reference, ``upload:<id>`` in an expression); nothing else is read
from the server's disk.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import MISSING, fields, replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from clipmath.compose import build_query, infer_method, learned_methods
from clipmath.errors import ClipmathError
from clipmath.options import field_help, field_meta, settings_fields, value_type
from clipmath.retrieval import Retriever
from clipmath.serve.config import ServeConfig
from clipmath.serve.engine import UPLOAD_PREFIX, QueryEngine
from clipmath.serve.errors import RequestError
from clipmath.serve.schemas import MAX_K, ExpressionText, GalleryId, ImageRef, item_url
from clipmath.store.duplicates import DuplicateSearch, duplicate_groups, duplicate_pairs
from clipmath.store.filters import QueryControls


class PhotoSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: GalleryId | ImageRef | None = Field(  # type: ignore[valid-type]
        None, description='A gallery id, or {"gallery_id": ...} / {"upload_id": ...} (from POST /api/uploads).'
    )
    text: str | None = Field(None, max_length=500)
    source: str | None = Field(None, max_length=200, description="'from' word of a SIMAT delta (method delta).")
    target: str | None = Field(None, max_length=200, description="'to' word of a SIMAT delta (method delta).")
    lam: float = Field(1.0, ge=-10, le=10, allow_inf_nan=False, description="Strength λ of the delta.")
    expression: ExpressionText | None = Field(  # type: ignore[valid-type]
        None, description='Terms over gallery ids, upload:<id> and quoted texts; a negative term: +beach.jpg -"people".'
    )
    method: str | None = Field(None, max_length=64)
    k: int = Field(24, ge=1, le=MAX_K)
    controls: dict[str, Any] = Field(
        default_factory=dict, description="Fields of QueryControls: " + ", ".join(f.name for f in fields(QueryControls))
    )
    distribution: int = Field(
        0, ge=0, le=MAX_K, description="Also return the scores of the best N hits passing the filters, before the "
        "cutoff (to draw the score distribution under a cutoff slider).",
    )  # fmt: skip


class PhotoHit(BaseModel):
    rank: int
    id: str
    score: float
    photo: dict[str, Any] | None
    thumbnail_url: str
    image_url: str
    video_url: str | None = Field(None, description="A video frame's video (play it from photo.time seconds).")


class PhotoPage(BaseModel):
    model: str
    method: str
    store_items: int
    results: list[PhotoHit]
    passed: int = Field(description="Hits that passed the filters and cutoff, as deep as the search went.")
    complete: bool = Field(description="The page is full, or no passing hit was missed.")
    exhausted: bool
    exact_fallback: bool
    distribution: list[float] = Field(default_factory=list, description="See the request's 'distribution'.")
    milliseconds: float


class ControlInfo(BaseModel):
    name: str
    help: str
    type: str = Field(description="number, integer or string.")
    optional: bool
    default: Any
    choices: list[str] | None
    minimum: float | None
    maximum: float | None


class DuplicateGroupModel(BaseModel):
    ids: list[str] = Field(description="The best copy first.")
    best: str
    min_score: float = Field(description="The weakest pair that joined the group.")
    photos: dict[str, dict[str, Any] | None]
    thumbnail_urls: dict[str, str]


class DuplicatesPage(BaseModel):
    threshold: float
    store_items: int
    pairs: int
    groups: list[DuplicateGroupModel]
    shown: int = Field(description="Groups in this answer (at most 'limit'); 'len(groups)' of all is 'total'.")
    total: int
    milliseconds: float


def controls_of(given: dict[str, Any]) -> QueryControls:
    names = {f.name for f in fields(QueryControls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise RequestError(422, f"unknown control {unknown[0]!r}; the controls are {', '.join(sorted(names))}")
    try:
        return QueryControls(**given)
    except (ClipmathError, TypeError) as exc:
        raise RequestError(422, str(exc)) from None


def unknown_method(method: str, methods: dict[str, str]) -> RequestError:
    """The answer to a method this server does not offer (a learned one needs its checkpoint at start-up)."""
    hint = " (a learned method: start the server with --checkpoint METHOD=PATH)" if method in learned_methods() else ""
    return RequestError(400, f"unknown method '{method}'{hint}; available: {', '.join(methods)}")


def control_infos() -> list[ControlInfo]:
    """Each field of :class:`QueryControls` as a front end needs it (declared once, in the dataclass)."""
    out = []
    for item in settings_fields(QueryControls):
        meta = field_meta(QueryControls, item.name)
        kind, optional = value_type(QueryControls, item)
        name = {float: "number", int: "integer"}.get(kind, "string")
        choices = list(meta["choices"]) if meta.get("choices") else None
        default = None if item.default is MISSING else item.default
        out.append(ControlInfo(name=item.name, help=meta.get("help") or "", type=name, optional=optional,
                               default=default, choices=choices, minimum=meta.get("minimum"),
                               maximum=meta.get("maximum")))  # fmt: skip
    return out


def add_photo_routes(api: APIRouter, retriever: Retriever, engine: QueryEngine, config: ServeConfig) -> None:
    """Register the ``/api/photos/...`` routes on ``api``."""
    label = retriever.encoder.info.label()
    methods, checkpoints = config.methods(), config.checkpoints

    def gallery_vector(name: str) -> tuple[np.ndarray, str]:
        """A gallery id's stored vector (the id is excluded from the results)."""
        snapshot = retriever.snapshot
        row = snapshot.row_of(name)
        if row is None:
            raise RequestError(404, f"no image {name!r} in this gallery")
        return np.asarray(snapshot.vectors[row], dtype=np.float32), name

    def upload_vector(upload_id: str) -> tuple[np.ndarray, None]:
        record = engine.uploads.get(upload_id)
        if record is None:
            raise RequestError(404, f"upload '{upload_id}' is unknown or expired: upload the image again")
        return record.vector, None

    def resolve(name: str) -> tuple[np.ndarray, str | None]:
        """An expression's image operand: ``upload:<id>`` or a gallery id."""
        if name.startswith(UPLOAD_PREFIX):
            return upload_vector(name[len(UPLOAD_PREFIX) :])
        return gallery_vector(name)

    def reference_of(request: PhotoSearchRequest) -> tuple[np.ndarray | None, str | None]:
        """The reference's vector and gallery id: a string or ``gallery_id`` is a gallery id, never an upload."""
        ref = request.reference
        if ref is None:
            return None, None
        if isinstance(ref, ImageRef) and ref.upload_id is not None:
            return upload_vector(ref.upload_id)
        return gallery_vector(ref.gallery_id if isinstance(ref, ImageRef) else ref)

    def hit(rank: int, item_id: str, score: float, photo: dict | None) -> PhotoHit:
        video = photo.get("video") if photo else None
        return PhotoHit(rank=rank, id=item_id, score=score, photo=photo, thumbnail_url=item_url("thumbnail", item_id),
                        image_url=item_url("image", item_id),
                        video_url=item_url("video", video) if isinstance(video, str) else None)  # fmt: skip

    def answer(request: PhotoSearchRequest, method: str) -> PhotoPage:
        started = time.perf_counter()
        controls = controls_of(request.controls)
        checkpoint = checkpoints.get(method)
        try:
            reference, reference_id = reference_of(request)
            query = build_query(reference=reference, reference_id=reference_id, text=request.text,
                                source=request.source, target=request.target, lam=request.lam,
                                expression=request.expression, resolve_image=resolve)  # fmt: skip
            page = retriever.search_page(query, controls, method=method, k=request.k, checkpoint=checkpoint)
            spread: list[float] = []
            if request.distribution:
                wide = replace(controls, min_score=None, sort="score", offset=0)
                deep = retriever.search_page(query, wide, method=method, k=request.distribution, checkpoint=checkpoint)
                spread = [round(h.score, 6) for h in deep.hits]
        except RequestError:
            raise
        except ClipmathError as exc:
            raise RequestError(400, str(exc)) from None
        metas = retriever.metadata()
        hits = [hit(h.rank + 1, h.id, h.score, metas[h.id].as_dict() if h.id in metas else None) for h in page.hits]
        return PhotoPage(model=label, method=method, store_items=len(retriever.snapshot), results=hits,
                         passed=page.passed, complete=page.complete, exhausted=page.exhausted,
                         exact_fallback=page.exact_fallback, distribution=spread,
                         milliseconds=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip

    def method_of(request: PhotoSearchRequest) -> str:
        try:
            method = request.method or infer_method(reference=request.reference, text=request.text,
                                                    source=request.source, target=request.target,
                                                    expression=request.expression)  # fmt: skip
        except ClipmathError as exc:
            raise RequestError(400, str(exc)) from None
        if method not in methods:
            raise unknown_method(method, methods)
        if request.k > config.max_k:
            raise RequestError(422, f"k = {request.k} is above this server's limit of {config.max_k}")
        return method

    @api.post("/photos/search", response_model=PhotoPage, summary="A page of a composed search under query controls")
    async def photo_search(request: PhotoSearchRequest) -> PhotoPage:
        method = method_of(request)
        return await asyncio.wrap_future(engine.call(lambda: answer(request, method)))

    @api.post("/photos/similar", response_model=PhotoPage, summary="More like this: the stored vector of a gallery id")
    async def similar(request: PhotoSearchRequest) -> PhotoPage:
        ref = request.reference
        name = ref.gallery_id if isinstance(ref, ImageRef) else ref
        if name is None or request.text or request.expression or request.source or request.target:
            raise RequestError(400, "'reference' (a gallery id) alone says which photo to find more of")
        return await asyncio.wrap_future(engine.call(lambda: answer(request, "image")))

    @api.get("/photos/controls", response_model=list[ControlInfo], summary="The query controls a search accepts")
    def controls() -> list[ControlInfo]:
        return control_infos()

    joined: dict[tuple, list] = {}  # the last join, by (snapshot, settings): the page asks again as it pages

    def find_duplicates(threshold: float, probes: int, limit: int) -> DuplicatesPage:
        started = time.perf_counter()
        engine.refresh_if_changed()
        snapshot, metas = retriever.snapshot, retriever.metadata()
        try:
            search = DuplicateSearch(threshold=threshold, probes=probes)
        except ClipmathError as exc:
            raise RequestError(422, str(exc)) from None
        key = (snapshot.state, search)  # the committed state's hash: an object's id() can be reused
        if key not in joined:
            joined.clear()
            joined[key] = duplicate_pairs(np.asarray(snapshot.vectors), search)
        pairs = joined[key]
        groups = duplicate_groups(snapshot.ids, pairs, metas)
        shown = [
            DuplicateGroupModel(
                ids=g.ids,
                best=g.best,
                min_score=g.min_score,
                photos={i: metas[i].as_dict() if i in metas else None for i in g.ids},
                thumbnail_urls={i: item_url("thumbnail", i) for i in g.ids},
            )  # fmt: skip
            for g in groups[:limit]
        ]
        return DuplicatesPage(threshold=search.threshold, store_items=len(snapshot), pairs=len(pairs), groups=shown,
                              shown=len(shown), total=len(groups),
                              milliseconds=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip

    @api.get("/photos/duplicates", response_model=DuplicatesPage, summary="Near-duplicate groups (nothing is deleted)")
    async def duplicates(
        threshold: float = Query(DuplicateSearch.threshold, description=field_help(DuplicateSearch, "threshold")),
        probes: int = Query(DuplicateSearch.probes, description=field_help(DuplicateSearch, "probes")),
        limit: int = Query(200, ge=1, le=10_000, description="Groups to return, the largest first."),
    ) -> DuplicatesPage:
        # no model work: a long join runs beside the searches, not in the model thread's queue
        return await run_in_threadpool(find_duplicates, threshold, probes, limit)
