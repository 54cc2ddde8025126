"""``GET /api/video/{video id}``: a gallery video's file, with HTTP range requests (``206 Partial Content``), so the
page's ``<video>`` element can seek to a frame's time. Only videos with frames in the committed state, only inside
the image root, as ``/api/image`` does for images."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from clipmath.retrieval import Retriever
from clipmath.serve.errors import RequestError
from clipmath.serve.images import contained_path
from clipmath.serve.schemas import ErrorResponse

#: The content type of each video file ending.
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
}
_PREFIX = b"/api/video/"


class _Videos:
    """The ids of the videos that have frames in the retriever's committed state (computed once per state)."""

    def __init__(self, retriever: Retriever) -> None:
        self._retriever = retriever
        self._cached: tuple[str, frozenset[str]] = ("", frozenset())
        self._lock = threading.Lock()

    def __contains__(self, video: str) -> bool:
        state = self._retriever.snapshot.state
        with self._lock:
            if self._cached[0] != state:
                metas = self._retriever.metadata().values()
                self._cached = (state, frozenset(m.video for m in metas if m.video))
            return video in self._cached[1]


def add_media_routes(api: APIRouter, retriever: Retriever, refresh: Callable[[], bool]) -> None:
    """Register ``/video/{id}`` on ``api``; ``refresh`` reloads the retriever when the store changed."""
    videos = _Videos(retriever)

    @api.get(
        "/video/{item_id:anypath}",
        response_class=FileResponse,
        summary="The file of a gallery video (range requests: 206 Partial Content)",
        responses={
            206: {"content": {t: {} for t in sorted(set(VIDEO_TYPES.values()))}},
            403: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
        },
    )
    def video(request: Request, item_id: str) -> FileResponse:
        raw = request.scope.get("raw_path")
        if raw and raw.startswith(_PREFIX):  # bytes that are not UTF-8 survive, as in /api/image
            item_id = unquote_to_bytes(raw[len(_PREFIX) :]).decode("utf-8", "surrogateescape")
        if item_id not in videos:
            refresh()
            if item_id not in videos:
                raise RequestError(404, f"no video '{item_id}' in this gallery")
        path = contained_path(retriever.snapshot.root, item_id)
        if not path.is_file():
            raise RequestError(404, f"the file of '{item_id}' is gone from the store's folder")
        media_type = VIDEO_TYPES.get(PurePosixPath(item_id).suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})
