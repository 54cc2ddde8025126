"""Whether a store changed since a reader last looked: what a long-running reader (the server) polls."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from clipmath.store.manifest import MANIFEST, file_identity


class StoreWatcher:
    """Tells whether the store changed since the last call (cheap: one PRAGMA and one stat).

    A commit by another connection changes SQLite's ``data_version``; a repair that had to rebuild the manifest
    renames a new file into place, which the watcher notices by its identity and follows (read-only, so closing the
    old connection leaves the new manifest's write-ahead log alone)."""

    def __init__(self, store: Path) -> None:
        self._path = store / MANIFEST
        self._lock = threading.Lock()
        self._conn, self._identity = self._connect()
        self._version = self._read()

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
        identity = file_identity(self._path)
        return sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, check_same_thread=False), identity

    def _read(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        with self._lock:
            identity = file_identity(self._path)
            if identity is not None and identity != self._identity:
                old = self._conn
                self._conn, self._identity = self._connect()
                old.close()
                self._version = self._read()
                return True
            version = self._read()
            changed, self._version = version != self._version, version
            return changed
