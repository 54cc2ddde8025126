"""The HTTP plumbing of the server: error handlers and the JSON that always serialises, request-body and
cross-site guards, security headers, and running the app with uvicorn (in the foreground or on a thread)."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipmath.errors import ClipmathError
from clipmath.serve.config import ServeConfig
from clipmath.serve.errors import RequestError

log = logging.getLogger("clipmath.serve.app")

TOKEN_COOKIE = "clipmath_token"
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


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


def token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-clipmath-token") or request.cookies.get(TOKEN_COOKIE)


class SafeJSONResponse(JSONResponse):
    """JSON that always serialises: ASCII with ``\\u`` escapes (a lone surrogate in an id or an echoed input is
    sent escaped, never a 500) and no NaN/Infinity (``null`` instead: they are not JSON)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def install_error_handlers(app: FastAPI) -> None:
    """4xx with a one-line ``detail`` for user mistakes, 422 listing the fields for schema violations (never
    echoing the offending input), a bare 500 for anything else."""

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return SafeJSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": error.get("type"),
            }
            for error in exc.errors()
        ]
        return SafeJSONResponse({"detail": fields}, status_code=422)

    @app.exception_handler(ClipmathError)
    async def user_error(_: Request, exc: ClipmathError) -> JSONResponse:
        # an unreachable back end (MilvusError) is the server's problem, not the request's: 503
        return SafeJSONResponse({"detail": str(exc)}, status_code=getattr(exc, "http_status", 400))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %r", exc)
        return SafeJSONResponse({"detail": "internal server error (details are in the server's log)"}, 500)


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line :class:`ClipmathError` if ``host:port`` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ClipmathError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (try another 'port')") from None


def version() -> str:
    from clipmath import __version__

    return __version__


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTP exception, so FastAPI's body parsing passes it on as a 413."""


class BodyLimit:
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
        await SafeJSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)

    def _message(self) -> str:
        return f"request body is larger than this server's limit of {self.max_bytes:,} bytes"


class PageHeaders:
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


class SameOrigin:
    """Refuse cross-site requests to the API (403): a page on another site must not make the browser call it.

    A browser says where a request comes from: ``Sec-Fetch-Site`` (modern browsers) and ``Origin`` (on POSTs and
    cross-origin requests). Either one naming another site is refused; requests without them (curl, scripts,
    the address bar) pass, as do the server's own page and links (``same-origin``, ``none``).
    """

    def __init__(self, app: ASGIApp, prefix: str = "/api") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            reason = cross_site_reason(dict(scope["headers"]))
            if reason is not None:
                response = SafeJSONResponse({"detail": f"cross-site request refused: {reason}"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_site_reason(headers: dict[bytes, bytes]) -> str | None:
    """Why a request with these (lower-case) headers comes from another site, or None if it does not."""
    fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    origin_text = origin.decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    parts = urlsplit(origin_text)
    if origin_text == "null" or parts.scheme not in ("http", "https") or parts.netloc.lower() != host:
        return f"Origin {origin_text} is not this server ({host})"
    return None
