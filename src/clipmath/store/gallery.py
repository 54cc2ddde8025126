"""A gallery on disk: float32 vectors + ids (relative paths) + per-item metadata, for one embedding model.

Layout of a store folder::

    manifest.sqlite     items (id, content hash, size, mtime, width, height, vector row), meta, bad files,
                        chunks (a SHA-256 per committed run of vector rows: silent damage is found by a check)
    vectors-<gen>.f32   append-only raw rows of ``dim`` values (meta ``vector_dtype``, float32 if absent)

Crash safety: new vectors are appended to the vector file and fsync'ed *before* the SQLite transaction that
records them (and the new committed row count) commits. A crash at any point leaves either the old or the new
committed state; rows past the committed count are garbage from an interrupted run and are truncated when the store
is next opened for writing. Readers (search, a server) read the manifest in one transaction (WAL mode: never blocked
by a writer) and see exactly the last committed state.

Damage (a truncated or missing vector file, a damaged or emptied manifest, rows pointing past the vector file,
garbage values) is a one-line :class:`StoreError` naming the fault; :mod:`clipmath.store.check` finds it (bytes
changed inside the vector file too) and :mod:`clipmath.store.repair` keeps the rows that still verify."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipmath.errors import StoreError
from clipmath.registry import import_ref
from clipmath.store.manifest import (
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    SCHEMA,
    block_digests,
    check_dtype,
    check_store_folder,
    connect,
    damaged,
    db_id,
    file_identity,
    is_new_store,
    manifest_errors,
    new_meta,
    py_id,
    read_meta,
    take_lock,
    vector_dtype,
    write_meta,
)
from clipmath.store.records import GallerySnapshot, ItemRecord, StoreInfo

if TYPE_CHECKING:
    from clipmath.encoders.base import EncoderInfo

#: Stores whose vectors live outside the store folder, by their meta ``vector_source``: the Gallery that reads them.
VECTOR_SOURCES = {"external": "clipmath.store.external:ExternalGallery"}


class Gallery:
    """Open with :meth:`open` (read-only) or :meth:`open_for_writing` (one writer at a time, locked)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None = None) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._manifest_identity = file_identity(path / MANIFEST)
        with manifest_errors(path):
            self.meta = read_meta(conn, path)
        if int(self.meta["format"]) != FORMAT_VERSION:
            raise StoreError(f"{path} has store format {self.meta['format']}, this clipmath reads {FORMAT_VERSION}")
        self.dim = int(self.meta["dim"])
        self.model_id = self.meta["model_id"]
        self.dtype = vector_dtype(self.meta)

    # ---- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> Gallery:
        """Open an existing store for reading."""
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise StoreError(f"no clipmath store at {path} (index a folder into it first)")
        conn = connect(path / MANIFEST, readonly=True)
        try:
            gallery = cls(path, conn)
            source = gallery.meta.get("vector_source")
            return import_ref(VECTOR_SOURCES[source])(path, conn) if source and cls is Gallery else gallery
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_for_writing(
        cls, path: str | Path, encoder: EncoderInfo, preprocessing: str, root: str | Path, dtype: str | None = None
    ) -> Gallery:
        """Create the store or reopen it to add vectors; refuses another model, preprocessing or image root.

        ``dtype`` (``float32`` or ``float16``) is the vector precision of a new store; reopening keeps the store's own
        (an explicit different ``dtype`` is refused)."""
        path = Path(path)
        check_store_folder(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {path}: {exc.strerror or exc}") from None
        lock_fd = take_lock(path / LOCK)
        conn = None
        try:
            conn = connect(path / MANIFEST)
            root_text = str(Path(root).resolve())
            with manifest_errors(path):
                if is_new_store(conn, path):
                    conn.executescript(SCHEMA)
                    with conn:
                        meta = new_meta(encoder.model_id, encoder.backend, encoder.dim, preprocessing, root_text)
                        write_meta(conn, {**meta, "vector_dtype": check_dtype(dtype or "float32")})
                else:
                    meta = read_meta(conn, path)  # a damaged store is refused, never re-initialised over its data
                    had_chunks = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks'").fetchone()
                    conn.executescript(SCHEMA)  # adds tables of newer versions (chunks)
                    if not had_chunks and "vector_dtype" not in meta and "checksums_from" not in meta:
                        with conn:  # an older store: its rows so far are trusted, every later one is checksummed
                            write_meta(conn, {"checksums_from": meta["vector_rows"]})
            gallery = cls(path, conn, lock_fd)
            if gallery.meta.get("vector_source") == "external":
                raise StoreError(f"{path} is an imported embeddings folder: it is read-only")
            gallery._check_compatible(encoder, preprocessing, root_text)
            if dtype is not None and check_dtype(dtype) != str(gallery.dtype):
                raise StoreError(
                    f"{path} stores {gallery.dtype} vectors, not {dtype} (the precision is set at creation)"
                )
            gallery._truncate_uncommitted()
            return gallery
        except BaseException:
            if conn is not None:
                conn.close()
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

    def reopen_if_replaced(self) -> bool:
        """Reconnect a reader whose manifest file was replaced (a repair that rebuilt it); returns whether it did.

        The old connection is read-only, so closing it leaves the new manifest's write-ahead log alone."""
        identity = file_identity(self.path / MANIFEST)
        if self._lock_fd is not None or identity is None or identity == self._manifest_identity:
            return False
        conn = connect(self.path / MANIFEST, readonly=True)
        self._conn.close()
        self._conn, self._manifest_identity = conn, identity
        with manifest_errors(self.path):
            self.meta = read_meta(conn, self.path)
        return True

    def snapshot(self) -> GallerySnapshot:
        """Ids and vectors of the last committed state (consistent even while a writer is appending or a repair
        switches the store to a new generation: an old generation's files are unlinked, never shortened)."""
        self.reopen_if_replaced()
        missing_before = None
        for _ in range(5):
            with manifest_errors(self.path):
                with self._read_transaction() as conn:
                    meta = read_meta(conn, self.path)
                    rows = conn.execute("SELECT id, vec_row FROM items ORDER BY vec_row").fetchall()
                committed = int(meta["vector_rows"])
            try:
                vectors = self._map_vectors(meta["vector_file"], committed)
            except FileNotFoundError:
                if missing_before == meta["vector_file"]:  # not a compaction swapping files: it is gone
                    raise damaged(self.path, f"the vector file {meta['vector_file']} is missing") from None
                missing_before = meta["vector_file"]
                continue  # a compaction replaced the file between the two reads: read again
            ids = [py_id(r[0]) for r in rows]
            positions = self._positions(rows, committed)
            if len(positions) and not np.array_equal(positions, np.arange(len(positions))):
                vectors = np.asarray(vectors[positions])
            elif len(positions) < vectors.shape[0]:
                vectors = vectors[: len(positions)]
            state = hashlib.sha256(meta["vector_file"].encode())
            for item_id, row in zip(ids, positions.tolist()):
                state.update(f"{item_id}\0{row}\n".encode("utf-8", "surrogateescape"))
            return GallerySnapshot(
                ids=ids, vectors=vectors, model_id=meta["model_id"], root=Path(meta["root"]), state=state.hexdigest()
            )
        raise StoreError(f"{self.path} keeps changing under the reader; try again")

    def _positions(self, rows: list[tuple], committed: int) -> np.ndarray:
        bad = next((r for r in rows if type(r[1]) is not int or not 0 <= r[1] < committed), None)
        if bad is not None:
            raise damaged(
                self.path, f"item {py_id(bad[0])!r} points to vector row {bad[1]!r}, outside the {committed} committed"
            )
        return np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))

    def items(self) -> dict[str, tuple[str, int, int, int]]:
        """``id -> (sha256, size, mtime_ns, vec_row)`` for every committed item."""
        with manifest_errors(self.path):
            rows = self._conn.execute("SELECT id, sha256, size, mtime_ns, vec_row FROM items").fetchall()
        return {py_id(r[0]): (r[1], r[2], r[3], r[4]) for r in rows}

    def rows_by_hash(self) -> dict[str, int]:
        with manifest_errors(self.path):
            return dict(self._conn.execute("SELECT sha256, vec_row FROM items").fetchall())

    def rows_for_hashes(self, digests: Iterable[str]) -> dict[str, int]:
        """``sha256 -> vector row`` for those of ``digests`` the store holds (indexed look-ups, not a full scan)."""
        wanted, found = list(dict.fromkeys(digests)), {}
        with manifest_errors(self.path):
            for start in range(0, len(wanted), 500):  # SQLite caps the number of bound parameters
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                query = f"SELECT sha256, vec_row FROM items WHERE sha256 IN ({marks})"
                found.update(self._conn.execute(query, part).fetchall())
        return found

    def record(self, item_id: str) -> ItemRecord | None:
        """The metadata of item ``item_id`` (None if absent)."""
        return self._record_where("id", db_id(item_id))

    def record_by_hash(self, sha256: str) -> ItemRecord | None:
        """Some item whose content has this SHA-256 (None if none)."""
        return self._record_where("sha256", sha256)

    def _record_where(self, column: str, value: str | bytes) -> ItemRecord | None:
        with manifest_errors(self.path):
            row = self._conn.execute(
                f"SELECT id, sha256, size, mtime_ns, width, height, extra FROM items WHERE {column} = ? LIMIT 1",
                (value,),
            ).fetchone()
            if row is None:
                return None
            return ItemRecord(py_id(row[0]), *row[1:6], extra=json.loads(row[6]) if row[6] else None)

    def bad_files(self) -> list[tuple[str, str]]:
        with manifest_errors(self.path):
            rows = self._conn.execute("SELECT id, reason FROM bad_files ORDER BY id").fetchall()
        return [(py_id(item_id), str(reason)) for item_id, reason in rows]

    def info(self) -> StoreInfo:
        with manifest_errors(self.path):
            meta = read_meta(self._conn, self.path)
            count = self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            bad = self._conn.execute("SELECT COUNT(*) FROM bad_files").fetchone()[0]
        self._check_vector_length(meta)
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
            created=meta.get("created", ""),
            vector_dtype=str(vector_dtype(meta)),
        )

    # ---- writing (only through open_for_writing) -------------------------------------------------------
    def commit(
        self,
        new_items: Sequence[ItemRecord] = (),
        new_vectors: np.ndarray | None = None,
        reused: Iterable[tuple[ItemRecord, int]] = (),
        bad: Iterable[tuple[str, str, int | None, int | None]] = (),
        drop: Iterable[str] = (),
    ) -> None:
        """Atomically add ``new_items`` with their vectors, items that reuse an existing vector row, and bad files,
        and forget the items ``drop``. An id that already exists is replaced (its file changed). Vectors are made
        durable before the manifest, which records their checksum in the same transaction as the rows."""
        self._require_writer()
        vector_rows = int(self.meta["vector_rows"])
        rows, chunks = [], []
        if new_items:
            with np.errstate(over="ignore", invalid="ignore"):  # out of the dtype's range: refused just below
                vectors = np.ascontiguousarray(new_vectors, dtype=self.dtype)
            if vectors.shape != (len(new_items), self.dim):
                raise ValueError(f"expected vectors of shape {(len(new_items), self.dim)}, got {vectors.shape}")
            unusable = [r.id for r, ok in zip(new_items, np.isfinite(vectors).all(axis=1)) if not ok]
            if unusable:
                raise StoreError(
                    f"refusing to store non-finite vectors (NaN or infinity in {self.dtype}) for {len(unusable)} "
                    f"item(s), e.g. {unusable[0]!r}"
                )
            with open(self._vector_path(self.meta["vector_file"]), "ab") as fh:
                fh.write(vectors.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            chunks = block_digests(vectors, vector_rows)
            rows = [(item, vector_rows + i) for i, item in enumerate(new_items)]
            vector_rows += len(new_items)
        rows += list(reused)
        bad = [(db_id(b[0]), *b[1:]) for b in bad]
        with self._conn:
            self._conn.executemany("DELETE FROM items WHERE id = ?", [(db_id(i),) for i in drop])
            self._conn.executemany(
                "INSERT OR REPLACE INTO items (id, sha256, size, mtime_ns, width, height, vec_row, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        db_id(r.id),
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
            self._conn.executemany("DELETE FROM bad_files WHERE id = ?", [(db_id(r.id),) for r, _ in rows])
            self._conn.executemany("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?)", bad)
            self._conn.execute("DELETE FROM items WHERE id IN (SELECT id FROM bad_files)")
            self._conn.executemany("INSERT OR REPLACE INTO chunks (first_row, rows, sha256) VALUES (?, ?, ?)", chunks)
            write_meta(self._conn, {"vector_rows": str(vector_rows)})
        self.meta["vector_rows"] = str(vector_rows)

    def touch(self, updates: Iterable[tuple[str, int]]) -> None:
        """Record a new mtime for items whose content did not change."""
        self._require_writer()
        with self._conn:
            self._conn.executemany("UPDATE items SET mtime_ns = ? WHERE id = ?", [(m, db_id(i)) for i, m in updates])

    def remove(self, ids: Iterable[str]) -> int:
        """Forget items (and bad-file entries) by id; their vector rows stay until :meth:`compact`."""
        self._require_writer()
        keys = [(db_id(i),) for i in ids]
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany("DELETE FROM items WHERE id = ?", keys)
            removed = self._conn.total_changes - before
            self._conn.executemany("DELETE FROM bad_files WHERE id = ?", keys)
        return removed

    def forget_bad_files(self, keep: Iterable[str]) -> int:
        """Drop bad-file entries whose id is not in ``keep`` (files gone from the folder); returns how many."""
        self._require_writer()
        keep_keys = {db_id(i) for i in keep}
        stale = [(key,) for (key,) in self._conn.execute("SELECT id FROM bad_files") if key not in keep_keys]
        if stale:
            with self._conn:
                self._conn.executemany("DELETE FROM bad_files WHERE id = ?", stale)
        return len(stale)

    def compact(self) -> int:
        """Rewrite the vector file without rows no item uses; returns the number of rows dropped."""
        from clipmath.store.compaction import compact

        return compact(self)

    # ---- internals -------------------------------------------------------------------------------------
    def _check_compatible(self, encoder: EncoderInfo, preprocessing: str, root: str) -> None:
        if self.meta["model_id"] != encoder.model_id:
            raise StoreError(
                f"{self.path} holds embeddings of {self.meta['model_id']}, not {encoder.model_id}: "
                "vectors of two models cannot be mixed (use another store, or the store's model)"
            )
        if self.meta["preprocessing"] != preprocessing:
            raise StoreError(
                f"{self.path} was built with preprocessing '{self.meta['preprocessing']}', not '{preprocessing}'"
            )
        if self.meta["root"] != root:
            raise StoreError(f"{self.path} indexes images under {self.meta['root']}, not {root}")

    @property
    def manifest(self) -> sqlite3.Connection:
        """The manifest's connection, for store modules that keep a table of their own in it (shard progress)."""
        return self._conn

    @property
    def row_bytes(self) -> int:
        return self.dim * self.dtype.itemsize

    def _truncate_uncommitted(self) -> None:
        path = self._vector_path(self.meta["vector_file"])
        committed = int(self.meta["vector_rows"]) * self.row_bytes
        if not path.exists():
            if committed:
                raise damaged(self.path, f"the vector file {path.name} is missing")
            path.touch()
        if path.stat().st_size > committed:
            with open(path, "r+b") as fh:
                fh.truncate(committed)
                os.fsync(fh.fileno())
        else:
            self._check_vector_length(self.meta)

    def _check_vector_length(self, meta: dict[str, str]) -> None:
        path = self._vector_path(meta["vector_file"])
        committed = int(meta["vector_rows"])
        try:
            held = path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            if committed:
                raise damaged(self.path, f"the vector file {path.name} is missing") from None
            return
        if held < committed:
            raise damaged(
                self.path,
                f"the vector file {path.name} holds {held} rows, the manifest commits {committed} (truncated)",
            )

    def _map_vectors(self, vector_file: str, rows: int) -> np.ndarray:
        path = self._vector_path(vector_file)
        if rows == 0:
            if not path.exists():
                raise FileNotFoundError(path)
            return np.zeros((0, self.dim), dtype=self.dtype)
        if path.stat().st_size < rows * self.row_bytes:
            self._check_vector_length({"vector_file": vector_file, "vector_rows": str(rows)})
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(rows, self.dim))

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
