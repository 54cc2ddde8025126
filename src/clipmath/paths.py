"""Where clipmath keeps caches (model-derived tables, tiny test models). Override with ``CLIPMATH_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("CLIPMATH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "clipmath"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
