"""A gallery on disk: float32 vectors + ids (relative paths) + per-item metadata, for one embedding model.

Layout of a store folder::

    manifest.sqlite     items (id, content hash, size, mtime, width, height, vector row), meta, bad files
    vectors-<gen>.f32   append-only raw float32 rows, ``dim`` values each

Crash safety: new vectors are appended to the vector file and fsync'ed *before* the SQLite transaction that
records them (and the new committed row count) commits. A crash at any point leaves either the old or the new
committed state; rows past the committed count are garbage from an interrupted run and are truncated when the store
is next opened for writing. Readers (search, a server) read the manifest in one transaction (WAL mode: never blocked
by a writer) and see exactly the last committed state.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipmath.errors import StoreError

if TYPE_CHECKING:
    from clipmath.encoders.base import EncoderInfo


FORMAT_VERSION = 1
MANIFEST = "manifest.sqlite"
LOCK = "write.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    vec_row INTEGER NOT NULL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS items_sha ON items (sha256);
CREATE TABLE IF NOT EXISTS bad_files (id TEXT PRIMARY KEY, reason TEXT NOT NULL, size INTEGER, mtime_ns INTEGER);
"""


@dataclass(frozen=True)
class ItemRecord:
    """One gallery item's metadata. ``id`` is the file's path relative to the store's image root (POSIX)."""

    id: str
    sha256: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    extra: dict | None = None


@dataclass(frozen=True)
class StoreInfo:
    path: Path
    model_id: str
    backend: str
    dim: int
    preprocessing: str
    root: str
    count: int
    bad_files: int
    vector_rows: int
    size_bytes: int
    created: str


@dataclass
class GallerySnapshot:
    """The committed state at one moment: ``vectors[i]`` is the embedding of ``ids[i]``.

    ``state`` fingerprints that state (ids, their vector rows, the vector file): it changes whenever anything a
    reader could see changes, including a file re-indexed under the same name.
    """

    ids: list[str]
    vectors: np.ndarray  # (N, D) float32; a read-only memmap when rows are contiguous
    model_id: str
    root: Path
    state: str = ""
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def path_of(self, item_id: str) -> Path:
        return self.root / item_id

    def row_of(self, item_id: str) -> int | None:
        """The row of ``item_id`` (None if it is not in the gallery)."""
        if self._row_of is None:
            self._row_of = {name: row for row, name in enumerate(self.ids)}
        return self._row_of.get(item_id)


class Gallery:
    """Open with :meth:`open` (read-only) or :meth:`open_for_writing` (one writer at a time, locked)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None = None) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self.meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if int(self.meta.get("format", 0)) != FORMAT_VERSION:
            raise StoreError(f"{path} has store format {self.meta.get('format')}, this clipmath reads {FORMAT_VERSION}")
        self.dim = int(self.meta["dim"])
        self.model_id = self.meta["model_id"]

    # ---- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> Gallery:
        """Open an existing store for reading."""
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise StoreError(f"no clipmath store at {path} (create one with: clipmath index DIR --store {path})")
        return cls(path, _connect(path / MANIFEST))

    @classmethod
    def open_for_writing(cls, path: str | Path, encoder: EncoderInfo, preprocessing: str, root: str | Path) -> Gallery:
        """Create the store or reopen it to add vectors; refuses another model, preprocessing or image root."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(path / LOCK)
        try:
            conn = _connect(path / MANIFEST)
            conn.executescript(_SCHEMA)
            root_text = str(Path(root).resolve())
            with conn:
                if conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0:
                    _write_meta(
                        conn,
                        {
                            "format": str(FORMAT_VERSION),
                            "model_id": encoder.model_id,
                            "backend": encoder.backend,
                            "dim": str(encoder.dim),
                            "preprocessing": preprocessing,
                            "root": root_text,
                            "vector_file": "vectors-0.f32",
                            "vector_rows": "0",
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        },
                    )
            gallery = cls(path, conn, lock_fd)
            gallery._check_compatible(encoder, preprocessing, root_text)
            gallery._truncate_uncommitted()
            return gallery
        except BaseException:
            os.close(lock_fd)
            raise

    def close(self) -> None:
        self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ---------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.meta["root"])

    def snapshot(self) -> GallerySnapshot:
        """Ids and vectors of the last committed state (consistent even while a writer is appending)."""
        for _ in range(5):
            with self._read_transaction() as conn:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                rows = conn.execute("SELECT id, vec_row FROM items ORDER BY vec_row").fetchall()
            try:
                vectors = self._map_vectors(meta["vector_file"], int(meta["vector_rows"]))
            except FileNotFoundError:  # a compaction replaced the file between the two reads: read again
                continue
            ids = [r[0] for r in rows]
            positions = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            if len(positions) and not np.array_equal(positions, np.arange(len(positions))):
                vectors = np.asarray(vectors[positions])
            elif len(positions) < vectors.shape[0]:
                vectors = vectors[: len(positions)]
            state = hashlib.sha256(meta["vector_file"].encode())
            for item_id, row in rows:
                state.update(f"{item_id}\0{row}\n".encode())
            return GallerySnapshot(
                ids=ids, vectors=vectors, model_id=meta["model_id"], root=Path(meta["root"]), state=state.hexdigest()
            )
        raise StoreError(f"{self.path} keeps changing under the reader; try again")

    def items(self) -> dict[str, tuple[str, int, int, int]]:
        """``id -> (sha256, size, mtime_ns, vec_row)`` for every committed item."""
        rows = self._conn.execute("SELECT id, sha256, size, mtime_ns, vec_row FROM items").fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def rows_by_hash(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT sha256, vec_row FROM items").fetchall())

    def record(self, item_id: str) -> ItemRecord | None:
        """The metadata of item ``item_id`` (None if absent)."""
        return self._record_where("id", item_id)

    def record_by_hash(self, sha256: str) -> ItemRecord | None:
        """Some item whose content has this SHA-256 (None if none)."""
        return self._record_where("sha256", sha256)

    def _record_where(self, column: str, value: str) -> ItemRecord | None:
        row = self._conn.execute(
            f"SELECT id, sha256, size, mtime_ns, width, height, extra FROM items WHERE {column} = ? LIMIT 1", (value,)
        ).fetchone()
        if row is None:
            return None
        return ItemRecord(*row[:6], extra=json.loads(row[6]) if row[6] else None)

    def bad_files(self) -> list[tuple[str, str]]:
        return self._conn.execute("SELECT id, reason FROM bad_files ORDER BY id").fetchall()

    def info(self) -> StoreInfo:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        count = self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        bad = self._conn.execute("SELECT COUNT(*) FROM bad_files").fetchone()[0]
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return StoreInfo(
            path=self.path,
            model_id=meta["model_id"],
            backend=meta["backend"],
            dim=int(meta["dim"]),
            preprocessing=meta["preprocessing"],
            root=meta["root"],
            count=count,
            bad_files=bad,
            vector_rows=int(meta["vector_rows"]),
            size_bytes=size,
            created=meta["created"],
        )

    # ---- writing (only through open_for_writing) -------------------------------------------------------
    def commit(
        self,
        new_items: Sequence[ItemRecord] = (),
        new_vectors: np.ndarray | None = None,
        reused: Iterable[tuple[ItemRecord, int]] = (),
        bad: Iterable[tuple[str, str, int, int]] = (),
    ) -> None:
        """Atomically add ``new_items`` with their vectors, items that reuse an existing vector row, and bad files.

        An id that already exists is replaced (its file changed). Vectors are made durable before the manifest.
        """
        self._require_writer()
        vector_rows = int(self.meta["vector_rows"])
        rows = []
        if new_items:
            vectors = np.ascontiguousarray(new_vectors, dtype=np.float32)
            if vectors.shape != (len(new_items), self.dim):
                raise ValueError(f"expected vectors of shape {(len(new_items), self.dim)}, got {vectors.shape}")
            with open(self._vector_path(self.meta["vector_file"]), "ab") as fh:
                fh.write(vectors.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            rows = [(item, vector_rows + i) for i, item in enumerate(new_items)]
            vector_rows += len(new_items)
        rows += list(reused)
        bad = list(bad)
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO items (id, sha256, size, mtime_ns, width, height, vec_row, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.id,
                        r.sha256,
                        r.size,
                        r.mtime_ns,
                        r.width,
                        r.height,
                        row,
                        json.dumps(r.extra) if r.extra else None,
                    )
                    for r, row in rows
                ],
            )
            self._conn.executemany("DELETE FROM bad_files WHERE id = ?", [(r.id,) for r, _ in rows])
            self._conn.executemany("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?)", bad)
            self._conn.execute("DELETE FROM items WHERE id IN (SELECT id FROM bad_files)")
            _write_meta(self._conn, {"vector_rows": str(vector_rows)})
        self.meta["vector_rows"] = str(vector_rows)

    def touch(self, updates: Iterable[tuple[str, int]]) -> None:
        """Record a new mtime for items whose content did not change."""
        self._require_writer()
        with self._conn:
            self._conn.executemany("UPDATE items SET mtime_ns = ? WHERE id = ?", [(m, i) for i, m in updates])

    def remove(self, ids: Iterable[str]) -> int:
        """Forget items (and bad-file entries) by id; their vector rows stay until :meth:`compact`."""
        self._require_writer()
        ids = [(i,) for i in ids]
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany("DELETE FROM items WHERE id = ?", ids)
            removed = self._conn.total_changes - before
            self._conn.executemany("DELETE FROM bad_files WHERE id = ?", ids)
        return removed

    def compact(self) -> int:
        """Rewrite the vector file without rows no item uses; returns the number of rows dropped."""
        self._require_writer()
        snapshot = self.snapshot()
        old_file = self.meta["vector_file"]
        dropped = int(self.meta["vector_rows"]) - len(snapshot)
        if dropped == 0:
            return 0
        generation = int(old_file.split("-")[1].split(".")[0]) + 1
        new_file = f"vectors-{generation}.f32"
        with open(self._vector_path(new_file), "wb") as fh:
            fh.write(np.ascontiguousarray(snapshot.vectors, dtype=np.float32).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        with self._conn:
            self._conn.executemany(
                "UPDATE items SET vec_row = ? WHERE id = ?",
                [(row, item_id) for row, item_id in enumerate(snapshot.ids)],
            )
            _write_meta(self._conn, {"vector_file": new_file, "vector_rows": str(len(snapshot))})
        self.meta.update(vector_file=new_file, vector_rows=str(len(snapshot)))
        self._vector_path(old_file).unlink(missing_ok=True)
        return dropped

    # ---- internals -------------------------------------------------------------------------------------
    def _check_compatible(self, encoder: EncoderInfo, preprocessing: str, root: str) -> None:
        if self.meta["model_id"] != encoder.model_id:
            raise StoreError(
                f"{self.path} holds embeddings of {self.meta['model_id']}, not {encoder.model_id}: "
                "vectors of two models cannot be mixed (use another --store, or the store's model)"
            )
        if self.meta["preprocessing"] != preprocessing:
            raise StoreError(
                f"{self.path} was built with preprocessing '{self.meta['preprocessing']}', not '{preprocessing}'"
            )
        if self.meta["root"] != root:
            raise StoreError(f"{self.path} indexes images under {self.meta['root']}, not {root}")

    def _truncate_uncommitted(self) -> None:
        path = self._vector_path(self.meta["vector_file"])
        committed = int(self.meta["vector_rows"]) * self.dim * 4
        if not path.exists():
            path.touch()
        if path.stat().st_size > committed:
            with open(path, "r+b") as fh:
                fh.truncate(committed)
                os.fsync(fh.fileno())
        elif path.stat().st_size < committed:
            raise StoreError(f"{path} is shorter than its manifest says: the store is damaged")

    def _map_vectors(self, vector_file: str, rows: int) -> np.ndarray:
        path = self._vector_path(vector_file)
        if rows == 0:
            if not path.exists():
                raise FileNotFoundError(path)
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(path, dtype=np.float32, mode="r", shape=(rows, self.dim))

    def _vector_path(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def _read_transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise StoreError("store opened read-only; use Gallery.open_for_writing")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable clipmath manifest: {exc}") from None


def _write_meta(conn: sqlite3.Connection, values: dict[str, str]) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path.parent} is being written by another clipmath process") from None
    return fd
