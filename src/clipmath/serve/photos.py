"""The photo-library routes: one page of a composed search under :class:`QueryControls` (cutoff, sort, filters,
paging; the same dataclass the CLI reads), each hit with its photo metadata, and "more like this" from a stored
vector (no re-encoding). Uploaded references go through ``POST /api/search``; these take gallery ids."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from clipmath.compose import build_query, infer_method
from clipmath.errors import ClipmathError
from clipmath.retrieval import Retriever
from clipmath.serve.errors import RequestError
from clipmath.serve.schemas import MAX_K, ExpressionText, GalleryId
from clipmath.store.filters import QueryControls


class PhotoSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: GalleryId | None = Field(None, description="Gallery id of the reference image.")  # type: ignore[valid-type]
    text: str | None = Field(None, max_length=500)
    expression: ExpressionText | None = Field(  # type: ignore[valid-type]
        None, description='Terms over gallery ids and quoted texts; a negative term: +beach.jpg -"people".'
    )
    method: str | None = Field(None, max_length=64)
    k: int = Field(24, ge=1, le=MAX_K)
    controls: dict[str, Any] = Field(
        default_factory=dict, description="Fields of QueryControls: " + ", ".join(f.name for f in fields(QueryControls))
    )


class PhotoHit(BaseModel):
    rank: int
    id: str
    score: float
    photo: dict[str, Any] | None


class PhotoPage(BaseModel):
    model: str
    method: str
    results: list[PhotoHit]
    passed: int = Field(description="Hits that passed the filters and cutoff, as deep as the search went.")
    complete: bool = Field(description="The page is full, or no passing hit was missed.")
    exhausted: bool
    exact_fallback: bool
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


def add_photo_routes(api: APIRouter, retriever: Retriever, refresh: Any) -> None:
    """Register ``POST /api/photos/search`` and ``POST /api/photos/similar`` on ``api``."""
    label = retriever.encoder.info.label()

    def answer(request: PhotoSearchRequest, method: str) -> PhotoPage:
        started = time.perf_counter()
        controls = controls_of(request.controls)
        refresh()
        try:
            query = build_query(reference=request.reference, text=request.text, expression=request.expression)
            page = retriever.search_page(query, controls, method=method, k=request.k)
        except ClipmathError as exc:
            raise RequestError(400, str(exc)) from None
        metas = retriever.metadata()
        hits = [
            PhotoHit(rank=h.rank + 1, id=h.id, score=h.score, photo=metas[h.id].as_dict() if h.id in metas else None)
            for h in page.hits
        ]
        return PhotoPage(model=label, method=method, results=hits, passed=page.passed, complete=page.complete,
                         exhausted=page.exhausted, exact_fallback=page.exact_fallback,
                         milliseconds=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip

    @api.post("/photos/search", response_model=PhotoPage, summary="A page of a composed search under query controls")
    async def photo_search(request: PhotoSearchRequest) -> PhotoPage:
        try:
            method = request.method or infer_method(
                reference=request.reference, text=request.text, expression=request.expression
            )
        except ClipmathError as exc:
            raise RequestError(400, str(exc)) from None
        return await run_in_threadpool(answer, request, method)

    @api.post("/photos/similar", response_model=PhotoPage, summary="More like this: the stored vector of a gallery id")
    async def similar(request: PhotoSearchRequest) -> PhotoPage:
        if request.reference is None or request.text or request.expression:
            raise RequestError(400, "'reference' (a gallery id) alone says which photo to find more of")
        if retriever.snapshot.row_of(request.reference) is None:
            raise RequestError(404, f"no gallery item {request.reference!r}")
        return await run_in_threadpool(answer, request, "image")
