"""The manifest of a store (SQLite): schema, connection, meta values, item ids, vector checksums, damage errors.

Item ids are file paths relative to the image root, as Python gives them (``os.fsdecode``): a name that is not
valid UTF-8 holds lone surrogates (``surrogateescape``). Such an id is stored as a BLOB of its raw bytes and read
back to the same string, so any name a file system allows is kept losslessly; every other id is stored as TEXT.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from clipmath.errors import StoreError

FORMAT_VERSION = 1
MANIFEST = "manifest.sqlite"
LOCK = "write.lock"
#: The vector dtypes a store may declare in its ``vector_dtype`` meta value (float32 if absent).
VECTOR_DTYPES = ("float32", "float16")
#: Vector rows per checksum (``chunks`` row): a commit or a rewrite records one SHA-256 per block of this many rows,
#: so one damaged byte costs a repair at most this many rows.
CHUNK_ROWS = 1024

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS chunks (first_row INTEGER PRIMARY KEY, rows INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""
#: Tables every store has; ``chunks`` (vector checksums) is absent in stores written before it existed.
REQUIRED_TABLES = ("meta", "items", "bad_files")
REQUIRED_META = ("format", "model_id", "backend", "dim", "preprocessing", "root", "vector_file", "vector_rows")


def damaged(path: Path, what: str) -> StoreError:
    """The one-line error for a damaged store, with the way out."""
    return StoreError(f"the store at {path} is damaged: {what} (run: clipmath check {path} --repair)")


@contextmanager
def manifest_errors(path: Path) -> Iterator[None]:
    """Turn SQLite errors and garbage values read from the manifest into a one-line :func:`damaged` error."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(f"the store at {path} is busy: {exc}; try again") from None
        raise damaged(path, f"manifest: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise damaged(path, f"manifest: {exc}") from None
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise damaged(path, f"manifest holds a missing or invalid value ({type(exc).__name__}: {exc})") from None


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the manifest. A reader's is read-only: closing it never checkpoints or deletes the
    write-ahead log (by name), so a reader still holding a manifest that a repair replaced cannot harm the new one."""
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level="DEFERRED", check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        conn = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn
    except sqlite3.DatabaseError as exc:
        raise damaged(path.parent, f"{path.name} is not a readable manifest ({exc})") from None


def missing_tables(conn: sqlite3.Connection) -> list[str]:
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [name for name in REQUIRED_TABLES if name not in present]


def read_meta(conn: sqlite3.Connection, path: Path, require_tables: bool = True) -> dict[str, str]:
    """The meta table, checked: every required key present, numbers that parse, a known vector dtype (and, with
    ``require_tables``, every required table present)."""
    absent = missing_tables(conn) if require_tables else []
    if absent:
        raise damaged(path, f"the manifest has no {', '.join(absent)} table (empty or damaged manifest)")
    meta = {str(key): str(value) for key, value in conn.execute("SELECT key, value FROM meta").fetchall()}
    lacking = [key for key in REQUIRED_META if key not in meta]
    if lacking:
        raise damaged(path, f"the manifest lacks {', '.join(lacking)}")
    for key in ("format", "dim", "vector_rows"):
        if not meta[key].isdigit():
            raise damaged(path, f"the manifest's {key} is not a number: {meta[key]!r}")
    if int(meta["dim"]) == 0:
        raise damaged(path, "the manifest's dim is 0")
    if meta.get("vector_dtype", "float32") not in VECTOR_DTYPES:
        raise damaged(path, f"unknown vector_dtype {meta['vector_dtype']!r}")
    name = meta["vector_file"]
    if "/" in name or name.startswith(".") or not name.startswith("vectors-"):
        raise damaged(path, f"the manifest names an invalid vector file {name!r}")
    return meta


def write_meta(conn: sqlite3.Connection, values: dict[str, str]) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


def vector_dtype(meta: dict[str, str]) -> np.dtype:
    return np.dtype(meta.get("vector_dtype", "float32"))


def db_id(item_id: str) -> str | bytes:
    """How ``item_id`` is stored: TEXT if it is valid Unicode, else a BLOB of its file-system bytes."""
    try:
        item_id.encode("utf-8")
        return item_id
    except UnicodeEncodeError:
        try:
            return item_id.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # not a file-system name (no file has it): a key that matches nothing
            return item_id.encode("utf-8", "surrogatepass")


def py_id(value: str | bytes) -> str:
    """The id read back from the manifest (inverse of :func:`db_id`)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def chunk_digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_store_file(name: str) -> bool:
    return name.startswith((MANIFEST, "vectors-", ".vectors-", "faiss-")) or name == LOCK


def check_store_folder(path: Path) -> None:
    """Refuse, in one line and before any work, a store path that cannot hold a store: a file, a folder with
    other things in it than a store's files, a place that cannot be created or written. A missing folder is
    created."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a store folder (give a new or an existing store folder)")
    if path.is_dir():
        try:
            foreign = next((p.name for p in path.iterdir() if not _is_store_file(p.name)), None)
        except OSError as exc:
            raise StoreError(f"cannot read the store folder {path}: {exc.strerror or exc}") from None
        if foreign is not None and not (path / MANIFEST).exists():
            raise StoreError(
                f"{path} is a folder that is not a clipmath store (it holds {foreign!r}): give a new or an existing "
                "store folder"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(f"cannot write to the store folder {path} (permission denied)")
        return
    try:  # created now, as the writer would: a place that cannot hold it is refused before any work
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store folder {path}: {exc.strerror or exc}") from None


def take_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot write to the store folder {path.parent}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path.parent} is being written by another clipmath process") from None
    return fd


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of ``path`` (None if absent): a reader compares it to notice a replaced manifest."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def checksums_from(meta: dict[str, str], first_chunk: int | None) -> int:
    """The first vector row that must have a checksum. A store written with checksums says so in its meta
    (``checksums_from``, or ``vector_dtype`` which arrived with them): its rows must all be covered, whatever the
    ``chunks`` table holds. Only an older store's first rows (before its first chunk) are trusted unverified."""
    if meta.get("checksums_from", "").isdigit():
        return int(meta["checksums_from"])
    if "vector_dtype" in meta:
        return 0
    return int(meta["vector_rows"]) if first_chunk is None else first_chunk


def block_digests(data: np.ndarray, first_row: int) -> list[tuple[int, int, str]]:
    """``(first_row, rows, sha256)`` per block of :data:`CHUNK_ROWS` rows of ``data`` (rows starting at
    ``first_row``): the ``chunks`` rows of one commit or rewrite."""
    return [
        (first_row + start, len(part), chunk_digest(np.ascontiguousarray(part).tobytes()))
        for start in range(0, len(data), CHUNK_ROWS)
        for part in (data[start : start + CHUNK_ROWS],)
    ]


def vector_generation(name: str) -> int:
    """The generation number of a vector file name (``vectors-<gen>.f32``); -1 if it has none."""
    text = name.removeprefix("vectors-").split(".", 1)[0]
    return int(text) if text.isdigit() else -1


def write_vector_file(store: Path, current: str, blocks: Iterator[np.ndarray]) -> str:
    """Write ``blocks`` (rows) to a new vector file of the next generation and return its name.

    The file is written under a temporary name and renamed into place: a name a reader may have mapped is never
    truncated or rewritten (a reader of the old file keeps reading it, unlinked, until it reopens)."""
    generation = max([vector_generation(current)] + [vector_generation(p.name) for p in store.glob("vectors-*")])
    name = f"vectors-{generation + 1}.f32"
    partial = store / f".{name}.partial"
    with open(partial, "wb") as fh:
        for block in blocks:
            fh.write(np.ascontiguousarray(block).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, store / name)
    fsync_dir(store)
    return name


def remove_other_generations(store: Path, keep: str) -> None:
    """Unlink every vector file but ``keep`` (the old generation, and any an interrupted rewrite left behind).

    Called by the writer (under the lock) once the manifest names ``keep``: a reader that still maps an old file keeps
    reading it (an unlinked file lives on while mapped) and moves to ``keep`` on its next snapshot."""
    for path in store.glob("vectors-*"):
        if path.name != keep:
            path.unlink(missing_ok=True)
    for path in store.glob(".vectors-*.partial"):
        path.unlink(missing_ok=True)
    fsync_dir(store)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_new_store(conn: sqlite3.Connection, path: Path) -> bool:
    """True for a store being created (nothing in it yet); a store with data but no meta is damaged, not new."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables and conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0]:
        return False
    if "items" in tables and conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]:
        return False
    return not any(p.stat().st_size for p in path.glob("vectors-*"))


def new_meta(model_id: str, backend: str, dim: int, preprocessing: str, root: str) -> dict[str, str]:
    return {
        "format": str(FORMAT_VERSION),
        "model_id": model_id,
        "backend": backend,
        "dim": str(dim),
        "preprocessing": preprocessing,
        "root": root,
        "vector_file": "vectors-0.f32",
        "vector_rows": "0",
        "vector_dtype": "float32",
        "checksums_from": "0",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def check_dtype(dtype: str) -> str:
    """``dtype`` if a store can hold it (one of :data:`VECTOR_DTYPES`), else a one-line StoreError."""
    if dtype not in VECTOR_DTYPES:
        raise StoreError(f"vector dtype {dtype!r} is not one a store holds (use {' or '.join(VECTOR_DTYPES)})")
    return dtype
