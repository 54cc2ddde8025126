"""Paths: where clipmath keeps caches (model-derived tables, tiny test models; override with ``CLIPMATH_CACHE``),
and the one wording of a folder that is not there."""

from __future__ import annotations

import os
from pathlib import Path

from clipmath.errors import ClipmathError


def cache_dir() -> Path:
    root = os.environ.get("CLIPMATH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "clipmath"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def existing_folder(path: str | Path, what: str = "image folder", error: type[ClipmathError] = ClipmathError) -> Path:
    """``path`` as a :class:`Path` if it is a folder, else ``error("<what> not found: <path>")``."""
    folder = Path(path)
    if not folder.is_dir():
        raise error(f"{what} not found: {folder}")
    return folder
