"""Repair a damaged store to the rows that still verify (:func:`repair`; :mod:`clipmath.store.check` finds the damage).

A repair keeps every item whose values are sound and whose vector row verifies, wherever it lies, and drops (and
lists) only the others. It never shortens or rewrites a file a reader may have mapped: the kept rows are written to
a new vector file (the next generation, with fresh block checksums), the manifest switches to it in one transaction
(or, where SQLite can no longer read it, is rebuilt and renamed into place, the damaged one kept beside it), and
only then is the old vector file unlinked. Readers (a server, a ``Retriever``) notice the new generation and reopen.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipmath.errors import StoreError
from clipmath.store.check import ITEM_COLUMNS, CheckReport, check, id_text, item_fault
from clipmath.store.manifest import (
    CHUNK_ROWS,
    LOCK,
    MANIFEST,
    SCHEMA,
    chunk_digest,
    connect,
    fsync_dir,
    py_id,
    read_meta,
    remove_other_generations,
    take_lock,
    vector_dtype,
    write_meta,
    write_vector_file,
)


@dataclass
class RepairReport:
    """What :func:`repair` did. ``dropped_items``: every id dropped (sorted); ``dropped_rows``: committed vector
    rows that were damaged or missing; ``unreadable_items``: item rows (at least this many) the damaged manifest no
    longer lets anyone read and whose ids no index recalls (so they are not in ``dropped_items``);
    ``vector_file``: the new generation's vector file, if the rows were rewritten."""

    store: Path
    problems: list[str]
    dropped_items: list[str]
    dropped_rows: int
    kept_items: int
    manifest_rebuilt: bool = False
    damaged_copy: str | None = None
    unreadable_items: int = 0
    vector_file: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.dropped_items or self.dropped_rows or self.manifest_rebuilt or self.vector_file)


def repair(store: str | Path) -> RepairReport:
    """Keep every sound item whose vector verifies, drop (and list) the rest; see the module docstring."""
    store = Path(store)
    if not (store / MANIFEST).is_file():
        raise StoreError(f"no clipmath store at {store}")
    lock_fd = take_lock(store / LOCK)
    try:
        found = check(store)  # again, now that no writer can change it
        if found.ok:
            return RepairReport(store, [], [], 0, found.items)
        meta = _salvage_meta(store)
        if meta is not None and meta.get("vector_source") == "external":
            raise StoreError(f"{store} is an imported embeddings folder: import it again ({found.problems[0]})")
        if meta is None:
            raise StoreError(
                f"the store at {store} cannot be repaired: its manifest has lost the model and dimension "
                f"({found.problems[0]}); index the folder again into a new store"
            )
        return _rebuild(store, meta, found)
    finally:
        os.close(lock_fd)


def _salvage_meta(store: Path) -> dict[str, str] | None:
    conn = sqlite3.connect(f"file:{store / MANIFEST}?mode=ro", uri=True)
    try:
        return read_meta(conn, store, require_tables=False)
    except (StoreError, sqlite3.DatabaseError):
        return None
    finally:
        conn.close()


@dataclass
class _Salvage:
    """The manifest's rows that can still be read, and the ids of item rows that cannot."""

    items: list[tuple]
    bad_files: list[tuple]
    lost_ids: list[str]
    lost_unknown: int


def _rebuild(store: Path, meta: dict[str, str], found: CheckReport) -> RepairReport:
    """Write the kept rows to a new vector file, switch the manifest to it atomically, then unlink the old file."""
    salvage = _salvage_rows(store / MANIFEST)
    committed = int(meta["vector_rows"])
    kept, dropped = [], list(salvage.lost_ids)
    for row in salvage.items:
        if item_fault(row, committed) is None and found.row_usable(row[6]):
            kept.append(row)
        else:
            dropped.append(id_text(row[0]))
    old_file = meta["vector_file"]
    used = np.unique(np.fromiter((row[6] for row in kept), dtype=np.int64, count=len(kept)))
    all_rows = used.tolist() == list(range(committed))
    if all_rows and found.damaged_rows == 0:  # every row is kept where it is: the vector file stays
        new_file, chunks = old_file, None
    else:
        new_file, chunks = _write_kept_rows(store, meta, used, found._block_starts)
        renumber = {int(old): new for new, old in enumerate(used.tolist())}
        kept = [(*row[:6], renumber[row[6]], row[7]) for row in kept]
    new_meta = {**meta, "vector_file": new_file, "vector_rows": str(len(used))}
    if chunks is not None:
        new_meta["checksums_from"] = "0"  # every kept row now has a checksum of its own block
    damaged_copy = store / f"{MANIFEST}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    if found.manifest_sound:
        _switch_in_place(store, new_meta, kept, chunks, salvage.bad_files, damaged_copy)
    else:
        _switch_by_rename(store, new_meta, kept, chunks, salvage.bad_files, damaged_copy)
    remove_other_generations(store, new_file)  # a reader that mapped one keeps its pages until it reopens
    return RepairReport(
        store,
        found.problems,
        sorted(set(dropped)),
        found.damaged_rows,
        len(kept),
        manifest_rebuilt=not found.manifest_sound,
        damaged_copy=damaged_copy.name,
        unreadable_items=salvage.lost_unknown,
        vector_file=new_file if new_file != old_file else None,
    )


def _write_kept_rows(
    store: Path, meta: dict[str, str], used: np.ndarray, block_starts: list[int]
) -> tuple[str, list[tuple[int, int, str]]]:
    """Copy rows ``used`` (sorted) of the old vector file into a new generation; returns its name and checksums.

    Rows of one old checksummed block stay one block (at most :data:`CHUNK_ROWS` rows), so a repair never makes
    the blocks coarser: the next damaged byte costs no more than this one did."""
    dtype, dim = vector_dtype(meta), int(meta["dim"])
    old = store / meta["vector_file"]
    source = np.memmap(old, dtype=dtype, mode="r", shape=(int(used[-1]) + 1, dim)) if len(used) else None
    block_of = np.searchsorted(np.asarray(sorted(block_starts), dtype=np.int64), used, side="right")
    edges = np.flatnonzero(np.diff(block_of)) + 1
    pieces = [
        (start + offset, min(stop, start + offset + CHUNK_ROWS))
        for start, stop in zip(np.concatenate(([0], edges)).tolist(), np.concatenate((edges, [len(used)])).tolist())
        for offset in range(0, stop - start, CHUNK_ROWS)
    ]
    chunks: list[tuple[int, int, str]] = []

    def blocks() -> Iterator[np.ndarray]:
        for start, stop in pieces:
            block = np.asarray(source[used[start:stop]])  # type: ignore[index]
            chunks.append((start, stop - start, chunk_digest(np.ascontiguousarray(block).tobytes())))
            yield block

    name = write_vector_file(store, meta["vector_file"], blocks())
    return name, chunks


def _fill(conn: sqlite3.Connection, meta: dict, items: list, chunks: list | None, bad_files: list) -> None:
    conn.executescript(SCHEMA)  # tables a damaged manifest lost
    with conn:
        conn.execute("DELETE FROM items")
        conn.execute("DELETE FROM bad_files")
        conn.executemany(f"INSERT OR REPLACE INTO items ({ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", items)
        conn.executemany("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?)", bad_files)
        if chunks is not None:
            conn.execute("DELETE FROM chunks")
            conn.executemany("INSERT INTO chunks (first_row, rows, sha256) VALUES (?, ?, ?)", chunks)
        write_meta(conn, meta)


def _switch_in_place(
    store: Path, meta: dict, items: list, chunks: list | None, bad_files: list, damaged_copy: Path
) -> None:
    """One transaction on the live manifest: readers see the old generation or the new one, and notice the change."""
    conn = connect(store / MANIFEST)
    try:
        backup = sqlite3.connect(damaged_copy)
        try:
            conn.backup(backup)
        finally:
            backup.close()
        _fill(conn, meta, items, chunks, bad_files)
    finally:
        conn.close()


def _switch_by_rename(
    store: Path, meta: dict, items: list, chunks: list | None, bad_files: list, damaged_copy: Path
) -> None:
    """A manifest SQLite cannot read whole: write a new one beside it and rename it into place (the old one kept).

    Readers hold read-only connections: the rename leaves them on the old file until they notice the new one."""
    fresh = store / f"{MANIFEST}.repair"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(fresh)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # the mode every store's manifest runs in
        _fill(conn, meta, items, chunks, bad_files)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    with open(fresh, "rb") as fh:
        os.fsync(fh.fileno())
    shutil.copyfile(store / MANIFEST, damaged_copy)
    for suffix in ("-wal", "-shm"):  # the old write-ahead log must never be applied to the new file
        (store / f"{MANIFEST}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, store / MANIFEST)
    fsync_dir(store)


def _salvage_rows(manifest: Path) -> _Salvage:
    """Every item and bad-file row that can still be read (row by row where a scan fails), and the ids of item rows
    that cannot (from the id index, where it survives)."""
    conn = sqlite3.connect(f"file:{manifest}?mode=ro", uri=True)
    try:
        items, lost = _read_rows(conn, "items", ITEM_COLUMNS)
        bad_files, _ = _read_rows(conn, "bad_files", "id, reason, size, mtime_ns")
        lost_ids: list[str] = []
        if lost is not None:  # read row by row: which ids are missing, the id index may say
            indexed = _indexed_ids(conn)
            if indexed is not None:
                read = {row[0] for row in items}
                lost_ids = [py_id(key) for key in indexed if key not in read]
                lost = 0
    finally:
        conn.close()
    return _Salvage(items, bad_files, lost_ids, lost or 0)


def _indexed_ids(conn: sqlite3.Connection) -> list | None:
    """Every item id, read from the primary-key index alone (it may survive damage to the table's pages)."""
    try:
        return [row[0] for row in conn.execute("SELECT id FROM items INDEXED BY sqlite_autoindex_items_1")]
    except sqlite3.DatabaseError:
        return None


def _read_rows(conn: sqlite3.Connection, table: str, columns: str) -> tuple[list[tuple], int | None]:
    """The rows of ``table`` SQLite can read, and how many rows in its rowid range it cannot (None: the table
    read whole)."""
    try:
        return conn.execute(f"SELECT {columns} FROM {table}").fetchall(), None
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            return [], None
    try:
        last = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        last = None
    rows, failed, rowid, misses = [], [], 0, 0
    while (rowid < last) if last is not None else misses < 1000:  # without a known end: stop after a long gap
        rowid += 1
        try:
            row = conn.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            failed.append(rowid)
            misses += 1
            continue
        if row is None:
            misses += 1
        else:
            rows.append(row)
            misses = 0
    last_read = rowid - misses if last is None else last
    lost = sum(1 for r in failed if r <= last_read)
    return rows, max(lost, 1) if failed else 0  # at least one where rows failed past the last one read
