"""The caption and rewrite cache of the rewrite pipelines: one SQLite table of JSON values keyed by what made them.

A caption is keyed by (encoder, image content hash, decoder, language model, decoder prompt); a rewrite by
(rewriter, prompt, caption, instruction). An eval over a benchmark therefore generates each caption and rewrite once,
and a re-run costs only retrieval. Writes are atomic per entry; a damaged or unreadable cache file is set aside and
a fresh one started (a cache is never worth failing a query for).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np


def content_hash(vector: np.ndarray) -> str:
    """A short hash of an image's embedding (what the captioner sees of it), rounded so float noise is ignored."""
    rounded = np.round(np.asarray(vector, dtype=np.float32).reshape(-1), 5).astype(np.float32)
    return hashlib.sha256(rounded.tobytes()).hexdigest()[:32]


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class RewriteCache:
    """Key -> JSON value, in memory and (when ``path`` is set) in a SQLite file shared by runs."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.hits = self.misses = 0

    def _connect(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = _open(self.path)
            except sqlite3.DatabaseError:
                self.path.replace(self.path.with_suffix(".damaged"))
                self._db = _open(self.path)
        return self._db

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._memory:
                self.hits += 1
                return self._memory[key]
            db = self._connect()
            row = db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone() if db else None
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            self._memory[key] = value = json.loads(row[0])
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._memory[key] = value
            db = self._connect()
            if db is not None:
                with db:
                    db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?)", (key, json.dumps(value)))


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    return db


def default_cache() -> RewriteCache:
    """The cache under the clipmath cache folder (``$CLIPMATH_CACHE``)."""
    from clipmath.paths import cache_dir

    return RewriteCache(cache_dir() / "rewrites.sqlite")
