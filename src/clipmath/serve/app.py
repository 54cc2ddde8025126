"""The FastAPI application: JSON API under ``/api``, the web page at ``/``, its files under ``/static``.

    >>> from clipmath.retrieval import Retriever
    >>> from clipmath.serve import ServeConfig, create_app, run_server
    >>> app = create_app(Retriever.open("gallery.store"), ServeConfig())
    >>> run_server(app, ServeConfig())          # or: clipmath serve gallery.store

Safety: binds to 127.0.0.1 unless told otherwise, and then only with a token, checked on every ``/api`` call;
request bodies, uploads and image pixels are bounded; only committed gallery items inside the store's image folder
are ever served; user mistakes get a 4xx with a one-line ``detail``, and an unexpected failure a bare 500.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipmath.compose import available_methods, learned_methods, zero_shot_methods
from clipmath.errors import ClipmathError
from clipmath.imageio import MAX_PIXELS
from clipmath.retrieval import Retriever
from clipmath.serve.captioning import Captioner
from clipmath.serve.engine import ImageKey, QueryEngine, SearchSpec, UploadRecord, infer_method
from clipmath.serve.errors import RequestError
from clipmath.serve.images import ThumbnailCache, decode_upload
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
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TOKEN_COOKIE = "clipmath_token"
TOKEN_ENV = "CLIPMATH_TOKEN"
#: Multipart framing allowed on top of ``max_upload_bytes`` in one request body.
BODY_OVERHEAD = 64 * 1024
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass
class ServeConfig:
    """How the server runs. ``index`` is the search index kind ``clipmath serve`` opens the retriever with."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    default_k: int = 12
    max_k: int = 100
    index: str = "exact"
    thumbnail_size: int = 256
    thumbnail_cache_bytes: int = 64 * 1024 * 1024
    max_batch: int = 32
    upload_slots: int = 128
    #: Host headers accepted; None = loopback names when bound to loopback (stops DNS rebinding), else any.
    allowed_hosts: tuple[str, ...] | None = None
    #: Trained weights of learned compose methods, by method name; only these learned methods are offered.
    checkpoints: dict[str, str] = field(default_factory=dict)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self) -> None:
        """Refuse unsafe or impossible settings with a one-line :class:`ClipmathError`."""
        if not self.loopback and not self.token:
            raise ClipmathError(
                f"binding to {self.host} exposes the server beyond this machine: set a token with --token "
                f"or the {TOKEN_ENV} environment variable (or bind to 127.0.0.1)"
            )
        if self.token is not None and len(self.token) < 8:
            raise ClipmathError("the token is too short: use at least 8 characters (16+ random ones recommended)")
        if not 1 <= self.default_k <= self.max_k <= MAX_K:
            raise ClipmathError(f"need 1 <= default k ({self.default_k}) <= max k ({self.max_k}) <= {MAX_K}")
        if self.max_upload_bytes < 1 or self.max_pixels < 1:
            raise ClipmathError("upload byte and pixel limits must be positive")
        unknown = sorted(set(self.checkpoints) - set(learned_methods()))
        if unknown:
            raise ClipmathError(
                f"checkpoints given for {', '.join(unknown)}, which are not learned methods "
                f"(learned: {', '.join(learned_methods()) or 'none'})"
            )

    def methods(self) -> dict[str, str]:
        """The compose methods this server offers: zero-shot ones, and learned ones given a checkpoint."""
        return {
            name: description.replace(" [needs --checkpoint]", "")
            for name, description in available_methods().items()
            if name in zero_shot_methods() or name in self.checkpoints
        }

    def trusted_hosts(self) -> list[str]:
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        return ["127.0.0.1", "localhost", "[::1]", "::1"] if self.loopback else ["*"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(retriever: Retriever, config: ServeConfig | None = None, captioner: Captioner | None = None) -> FastAPI:
    """The server for one retriever. Its model work runs on one background thread (started now, stopped at
    shutdown, restarted by a new startup)."""
    config = config or ServeConfig()
    config.check()
    engine = QueryEngine(
        retriever,
        max_batch=config.max_batch,
        upload_slots=config.upload_slots,
        max_pixels=config.max_pixels,
        captioner=captioner,
        checkpoints=config.checkpoints,
    )
    for method, checkpoint in config.checkpoints.items():
        retriever.composer(method, checkpoint)  # load now: a bad checkpoint fails at start-up, not per request
    methods = config.methods()
    engine.start()
    thumbnails = ThumbnailCache(config.thumbnail_cache_bytes, MAX_PIXELS)  # the index limit: every indexed file
    label = retriever.encoder.info.label()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(
        title="clipmath",
        summary="Composed image retrieval over a clipmath gallery store: image + text arithmetic in CLIP space.",
        version=_version(),
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}},
    )
    app.state.engine = engine
    app.state.config = config
    app.state.thumbnails = thumbnails
    _install_error_handlers(app)

    def require_token(request: Request) -> None:
        if not config.token:
            return
        given = _token_of(request)
        if given is None or not hmac.compare_digest(given.encode(), config.token.encode()):
            raise RequestError(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'")

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    def hit_model(rank: int, item_id: str, score: float, path: Path) -> Hit:
        quoted = quote(item_id, safe="/")
        return Hit(
            rank=rank,
            id=item_id,
            score=score,
            path=str(path),
            thumbnail_url=f"/api/thumbnail/{quoted}",
            image_url=f"/api/image/{quoted}",
        )

    async def run_search(request: SearchRequest, reference: ImageKey | None) -> SearchResponse:
        started = time.perf_counter()
        spec = SearchSpec(
            method="",
            k=request.k or config.default_k,
            reference=reference,
            text=request.text,
            source=request.source,
            target=request.target,
            lam=request.lam,
            expression=request.expression,
        )
        if spec.k > config.max_k:
            raise RequestError(422, f"k = {spec.k} is above this server's limit of {config.max_k}")
        spec.method = request.method or infer_method(spec)
        if spec.method not in methods:
            hint = (
                " (a learned method: start the server with --checkpoint METHOD=PATH)"
                if spec.method in learned_methods()
                else ""
            )
            raise RequestError(400, f"unknown method '{spec.method}'{hint}; available: {', '.join(methods)}")
        outcome = await asyncio.wrap_future(engine.search(spec))
        results = [hit_model(h.rank + 1, h.id, h.score, p) for h, p in zip(outcome.hits, outcome.paths)]
        return SearchResponse(
            model=label,
            method=spec.method,
            k=spec.k,
            store_items=outcome.store_items,
            results=results,
            milliseconds=round((time.perf_counter() - started) * 1000, 2),
        )

    async def read_upload(file: UploadFile) -> UploadRecord:
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise RequestError(413, f"upload is larger than this server's limit of {config.max_upload_bytes:,} bytes")
        image = await run_in_threadpool(decode_upload, data, config.max_pixels)
        return await asyncio.wrap_future(engine.encode_upload(data, image))

    @api.get("/health", response_model=Health, summary="Liveness, model and store size")
    def health() -> Health:
        return Health(status="ok", model=label, store_items=len(engine.snapshot))

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
            captioning=captioner.label if captioner else None,
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
            items=[Item(id=item_id, thumbnail_url=f"/api/thumbnail/{quote(item_id, safe='/')}") for item_id in page],
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
        lam: Annotated[float, Form(ge=-10, le=10)] = 1.0,
        method: Annotated[str | None, Form(max_length=64)] = None,
        k: Annotated[int | None, Form(ge=1, le=MAX_K)] = None,
    ) -> SearchResponse:
        record = await read_upload(image)
        request = SearchRequest(
            text=text or None, source=source or None, target=target or None, lam=lam, method=method or None, k=k
        )
        return await run_search(request, ImageKey(upload_id=record.upload_id))

    @api.get(
        "/thumbnail/{item_id:path}",
        response_class=Response,
        summary="JPEG thumbnail of a gallery image",
        responses={200: {"content": {"image/jpeg": {}}}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    )
    def thumbnail(item_id: str, size: Annotated[int | None, Query(ge=16, le=1024)] = None) -> Response:
        path = engine.gallery_file(item_id)
        data = thumbnails.get(path, size or config.thumbnail_size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @api.get(
        "/image/{item_id:path}",
        response_class=FileResponse,
        summary="The original file of a gallery image",
        responses={403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    )
    def image(item_id: str) -> FileResponse:
        path = engine.gallery_file(item_id)
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
        return CaptionResponse(caption=text, captioner=captioner.label if captioner else "")

    @api.post(
        "/caption/difference",
        response_model=CaptionResponse,
        summary="Describe what changed between two images (needs a captioner)",
        responses={501: {"model": ErrorResponse}},
    )
    async def caption_difference(request: DifferenceRequest) -> CaptionResponse:
        text = await asyncio.wrap_future(engine.difference(request.before.key(), request.after.key()))
        return CaptionResponse(caption=text, captioner=captioner.label if captioner else "")

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(_PageHeaders)
    app.add_middleware(_BodyLimit, max_bytes=config.max_upload_bytes + BODY_OVERHEAD)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.trusted_hosts())
    return app


def run_server(app: FastAPI, config: ServeConfig) -> None:
    """Serve ``app`` with uvicorn on ``config.host:config.port`` until interrupted."""
    import uvicorn

    config.check()
    check_port_free(config.host, config.port)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", server_header=False)


class BackgroundServer:
    """Run ``app`` with uvicorn on a background thread (tests, notebooks, benchmarks); port 0 picks a free one.

    >>> with BackgroundServer(app) as server:
    ...     httpx.get(server.url + "api/health")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False)
        )
        self._thread = threading.Thread(target=self._server.run, name="clipmath-serve-http", daemon=True)
        self.host = host
        self.port = port

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ClipmathError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


# ---- helpers ------------------------------------------------------------------------------------------
def _token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-clipmath-token") or request.cookies.get(TOKEN_COOKIE)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(ClipmathError)
    async def user_error(_: Request, exc: ClipmathError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %r", exc)
        return JSONResponse({"detail": "internal server error (details are in the server's log)"}, status_code=500)


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line :class:`ClipmathError` if ``host:port`` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ClipmathError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (try another --port)") from None


def _version() -> str:
    from clipmath import __version__

    return __version__


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTP exception, so FastAPI's body parsing passes it on as a 413."""


class _BodyLimit:
    """Answer 413 to request bodies over ``max_bytes``: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(413, self._message())
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)

    def _message(self) -> str:
        return f"request body is larger than this server's limit of {self.max_bytes:,} bytes"


class _PageHeaders:
    """Security headers for every response, and a strict Content-Security-Policy for the web page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        is_page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if is_page:
                    headers.append((b"content-security-policy", _PAGE_CSP.encode()))
                    headers.append((b"x-frame-options", b"DENY"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
