"""The HTTP-aware user error: a :class:`~clipmath.errors.ClipmathError` that knows its status code."""

from __future__ import annotations

from clipmath.errors import ClipmathError


class RequestError(ClipmathError):
    """A bad request, answered with ``status`` and a one-line ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
