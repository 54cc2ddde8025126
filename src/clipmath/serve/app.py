"""The FastAPI application: JSON API under ``/api``, the web page at ``/``, its files under ``/static``.

    >>> from clipmath.retrieval import Retriever
    >>> from clipmath.serve import ServeConfig, create_app, run_server
    >>> app = create_app(Retriever.open("gallery.store"), ServeConfig())
    >>> run_server(app, ServeConfig())          # or: clipmath serve gallery.store

Safety: binds to 127.0.0.1 unless told otherwise, and then only with a token, checked on every ``/api`` call;
cross-site requests to ``/api`` are refused (``Origin``/``Sec-Fetch-Site``); request bodies, uploads and image
pixels are bounded (and the pixels decoded at once, across uploads); only committed gallery items inside the
store's image folder are ever served; one failing request never fails another batched with it; user mistakes get
a 4xx with a one-line ``detail``, and an unexpected failure a bare 500.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware.trustedhost import TrustedHostMiddleware

from clipmath.compose import infer_method
from clipmath.errors import ComposeError
from clipmath.imageio import MAX_PIXELS
from clipmath.retrieval import Retriever
from clipmath.serve.captioning import Captioner, captions_label, differences_label, make_captioner
from clipmath.serve.config import TOKEN_ENV, ServeConfig, is_loopback
from clipmath.serve.engine import ImageKey, QueryEngine, SearchSpec, UploadRecord, upload_id_of
from clipmath.serve.errors import RequestError
from clipmath.serve.http import (
    BackgroundServer,
    BodyLimit,
    PageHeaders,
    SafeJSONResponse,
    SameOrigin,
    check_port_free,
    install_error_handlers,
    run_server,
    token_of,
    version,
)
from clipmath.serve.images import ThumbnailCache, decode_upload, frame_image
from clipmath.serve.knn_service import add_knn_service
from clipmath.serve.media import add_media_routes
from clipmath.serve.photos import add_photo_routes, unknown_method
from clipmath.serve.schemas import (
    MAX_K,
    CaptionRequest,
    CaptionResponse,
    DifferenceRequest,
    ErrorResponse,
    Health,
    Hit,
    Item,
    ItemsPage,
    SearchRequest,
    SearchResponse,
    StoreInfo,
    UploadResponse,
    item_url,
)
from clipmath.serve.uploads import PixelBudget, upload_pixels

__all__ = ["BackgroundServer", "ServeConfig", "TOKEN_ENV", "check_port_free", "create_app", "is_loopback", "run_server"]

STATIC_DIR = Path(__file__).parent / "static"
#: Multipart framing allowed on top of ``max_upload_bytes`` in one request body.
BODY_OVERHEAD = 64 * 1024


class _AnyPath(Convertor):
    """A path parameter that may hold any character, newlines included (file names may)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


def _item_id(request: Request, kind: str, parsed: str) -> str:
    """The gallery id in ``/api/<kind>/<id>``, decoded from the raw path so that bytes that are not UTF-8 survive."""
    raw = request.scope.get("raw_path")
    prefix = f"/api/{kind}/".encode()
    if raw and raw.startswith(prefix):
        return unquote_to_bytes(raw[len(prefix) :]).decode("utf-8", "surrogateescape")
    return parsed


def create_app(retriever: Retriever, config: ServeConfig | None = None, captioner: Captioner | None = None) -> FastAPI:
    """The server for one retriever. Its model work runs on one background thread (started now, stopped at
    shutdown, restarted by a new startup)."""
    config = config or ServeConfig()
    config.check()
    if captioner is None:
        device = str(getattr(retriever.encoder, "device", "cpu"))
        captioner = make_captioner(retriever.encoder, config.caption_lm, config.difference_checkpoint, config.decoder,
                                   device, config.decoder_options)  # fmt: skip
    engine = QueryEngine(
        retriever,
        max_batch=config.max_batch,
        upload_slots=config.upload_slots,
        captioner=captioner,
        checkpoints=config.checkpoints,
    )
    for method, checkpoint in config.checkpoints.items():
        retriever.composer(method, checkpoint)  # load now: a bad checkpoint fails at start-up, not per request
    methods = config.methods()
    engine.start()
    thumbnails = ThumbnailCache(config.thumbnail_cache_bytes, MAX_PIXELS)  # the index limit: every indexed file
    budget = PixelBudget(config.upload_pixel_budget, config.upload_wait_seconds)
    label = retriever.encoder.info.label()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(
        default_response_class=SafeJSONResponse,
        title="clipmath",
        summary="Composed image retrieval over a clipmath gallery store: image + text arithmetic in CLIP space.",
        version=version(),
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}},
    )
    app.state.captioner = captioner  # what the page and a launcher show (None: no captions)
    app.state.engine = engine
    app.state.config = config
    app.state.thumbnails = thumbnails
    app.state.upload_budget = budget
    install_error_handlers(app)

    def require_token(request: Request) -> None:
        if not config.token:
            return
        given = token_of(request)
        if given is None or not hmac.compare_digest(given.encode(), config.token.encode()):
            raise RequestError(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'")

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    def hit_model(rank: int, item_id: str, score: float, path: Path) -> Hit:
        return Hit(
            rank=rank,
            id=item_id,
            score=score,
            path=str(path),
            thumbnail_url=item_url("thumbnail", item_id),
            image_url=item_url("image", item_id),
        )

    async def run_search(request: SearchRequest, reference: ImageKey | None) -> SearchResponse:
        started = time.perf_counter()
        fields = request.model_dump(include={"text", "source", "target", "lam", "expression"})
        spec = SearchSpec(method="", k=request.k or config.default_k, reference=reference, **fields)
        if spec.k > config.max_k:
            raise RequestError(422, f"k = {spec.k} is above this server's limit of {config.max_k}")
        try:
            spec.method = request.method or infer_method(
                reference=reference, text=spec.text, source=spec.source, target=spec.target, expression=spec.expression
            )
        except ComposeError as exc:
            raise RequestError(400, str(exc)) from None
        if spec.method not in methods:
            raise unknown_method(spec.method, methods)
        outcome = await asyncio.wrap_future(engine.search(spec))
        results = [hit_model(h.rank + 1, h.id, h.score, p) for h, p in zip(outcome.hits, outcome.paths)]
        return SearchResponse(
            model=label,
            method=spec.method,
            k=spec.k,
            store_items=outcome.store_items,
            results=results,
            milliseconds=round((time.perf_counter() - started) * 1000, 2),
            timings={step: round(ms, 2) for step, ms in outcome.timings.items()},
        )

    async def read_upload(file: UploadFile) -> UploadRecord:
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise RequestError(413, f"upload is larger than this server's limit of {config.max_upload_bytes:,} bytes")
        known = engine.uploads.get(upload_id_of(data))
        if known is not None:
            return known
        async with budget.hold(upload_pixels(data, config.max_pixels)):  # decoded pixels in flight are bounded
            image = await run_in_threadpool(decode_upload, data, config.max_pixels)
            try:
                return await asyncio.wrap_future(engine.encode_upload(data, image))
            finally:
                del image

    @api.get("/health", response_model=Health, summary="Liveness, model, store size and the index back end's state")
    def health() -> Health:
        probe = getattr(retriever.index, "health", None)  # an index served elsewhere (milvus:URI) reports its state
        backend = probe() if probe is not None else None
        state = "ok" if backend is None or backend.get("ok") else "degraded"
        return Health(status=state, model=label, store_items=len(engine.snapshot), backend=backend)

    @api.get("/info", response_model=StoreInfo, summary="The store, the model, the methods and the server's limits")
    def info() -> StoreInfo:
        details = engine.store_info()
        encoder_info = retriever.encoder.info
        return StoreInfo(
            model=label,
            model_id=encoder_info.model_id,
            pretrained=encoder_info.pretrained,
            dim=encoder_info.dim,
            preprocessing=details.preprocessing,
            index=retriever.config.index,
            store_items=len(engine.snapshot),
            skipped_files=details.bad_files,
            created=details.created,
            methods=methods,
            default_k=config.default_k,
            max_k=config.max_k,
            max_upload_bytes=config.max_upload_bytes,
            max_pixels=config.max_pixels,
            captioning=captions_label(captioner),
            difference_captioning=differences_label(captioner),
            token_required=bool(config.token),
        )

    @api.get("/items", response_model=ItemsPage, summary="Browse gallery ids (to pick a reference image)")
    def items(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 60,
        q: Annotated[str | None, Query(max_length=200, description="Case-insensitive substring of the id.")] = None,
    ) -> ItemsPage:
        engine.refresh_if_changed()
        ids = engine.snapshot.ids
        if q:
            needle = q.lower()
            ids = [item_id for item_id in ids if needle in item_id.lower()]
        page = ids[offset : offset + limit]
        return ItemsPage(
            total=len(ids),
            offset=offset,
            items=[Item(id=item_id, thumbnail_url=item_url("thumbnail", item_id)) for item_id in page],
        )

    @api.post(
        "/uploads",
        response_model=UploadResponse,
        status_code=201,
        summary="Upload an image to use as a reference (returns its upload_id)",
    )
    async def upload(
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, GIF, BMP or TIFF.")],
    ) -> UploadResponse:
        record = await read_upload(image)
        return UploadResponse(upload_id=record.upload_id, width=record.width, height=record.height, model=label)

    @api.post("/search", response_model=SearchResponse, summary="Composed search (reference by gallery id or upload)")
    async def search(request: SearchRequest) -> SearchResponse:
        return await run_search(request, request.reference.key() if request.reference else None)

    @api.post(
        "/search/upload",
        response_model=SearchResponse,
        summary="One-shot composed search with an uploaded reference image (multipart form)",
    )
    async def search_upload(
        image: Annotated[UploadFile, File(description="The reference image.")],
        text: Annotated[str | None, Form(max_length=500)] = None,
        source: Annotated[str | None, Form(max_length=200)] = None,
        target: Annotated[str | None, Form(max_length=200)] = None,
        lam: Annotated[float, Form(ge=-10, le=10, allow_inf_nan=False)] = 1.0,
        method: Annotated[str | None, Form(max_length=64)] = None,
        k: Annotated[int | None, Form(ge=1, le=MAX_K)] = None,
    ) -> SearchResponse:
        record = await read_upload(image)
        request = SearchRequest(
            text=text or None, source=source or None, target=target or None, lam=lam, method=method or None, k=k
        )
        return await run_search(request, ImageKey(upload_id=record.upload_id))

    @api.get(
        "/thumbnail/{item_id:anypath}",
        response_class=Response,
        summary="JPEG thumbnail of a gallery image",
        responses={200: {"content": {"image/jpeg": {}}}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    )
    def thumbnail(
        request: Request, item_id: str, size: Annotated[int | None, Query(ge=16, le=1024)] = None
    ) -> Response:
        path = engine.gallery_file(_item_id(request, "thumbnail", item_id))
        data = thumbnails.get(path, size or config.thumbnail_size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @api.get(
        "/image/{item_id:anypath}",
        response_class=FileResponse,
        summary="The original file of a gallery image (of a video frame: the frame, as a JPEG)",
        responses={403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    )
    def image(request: Request, item_id: str) -> Response:
        item_id = _item_id(request, "image", item_id)
        path = engine.gallery_file(item_id)
        frame = frame_image(path)
        if frame is not None:
            return Response(frame, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
        if not path.is_file():
            raise RequestError(404, f"the file of '{item_id}' is gone from the store's folder")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=300"})

    @api.post(
        "/caption",
        response_model=CaptionResponse,
        summary="Caption an image (needs a captioner)",
        responses={501: {"model": ErrorResponse}},
    )
    async def caption(request: CaptionRequest) -> CaptionResponse:
        text = await asyncio.wrap_future(engine.caption(request.image.key()))
        return CaptionResponse(caption=text, captioner=captions_label(captioner) or "")

    @api.post(
        "/caption/difference",
        response_model=CaptionResponse,
        summary="Describe what changed between two images (needs a captioner)",
        responses={501: {"model": ErrorResponse}},
    )
    async def caption_difference(request: DifferenceRequest) -> CaptionResponse:
        text = await asyncio.wrap_future(engine.difference(request.before.key(), request.after.key()))
        return CaptionResponse(caption=text, captioner=differences_label(captioner) or "")

    add_photo_routes(api, retriever, engine, config)
    add_media_routes(api, retriever, engine.refresh_if_changed)
    app.include_router(api)
    add_knn_service(app, retriever, config, require_token)  # clip-retrieval's back-end API

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(PageHeaders)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes + BODY_OVERHEAD)
    app.add_middleware(SameOrigin)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.trusted_hosts())
    return app
