"""Find damage in a store (:func:`check`) and roll it back to its last consistent commit (:func:`repair`).

A check reads everything: the manifest's own integrity (SQLite ``integrity_check``), its tables and meta values,
every item row (types, content hash, vector row inside the committed rows), the vector file's length, and the
SHA-256 of every committed chunk of vector rows — so bytes changed inside the vector file are found.

The last consistent commit is the longest prefix of vector rows whose chunks all verify (rows committed before
checksums existed are trusted). A repair keeps the items whose vectors lie in that prefix and whose values are sound,
drops the rest (they are re-indexed by the next ``index`` run), truncates the vector file, and says what it dropped.
A manifest SQLite cannot read is rebuilt from the rows that can still be read; the damaged file is kept beside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from clipmath.errors import StoreError
from clipmath.store.manifest import (
    LOCK,
    MANIFEST,
    SCHEMA,
    py_id,
    read_meta,
    take_lock,
    vector_dtype,
    write_meta,
)

#: Problems listed one by one before the rest are counted.
MAX_LISTED = 20
_ITEM_COLUMNS = "id, sha256, size, mtime_ns, width, height, vec_row, extra"


@dataclass
class CheckReport:
    """What :func:`check` found. ``consistent_rows``: vector rows up to which every committed chunk verifies."""

    store: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    items: int = 0
    vector_rows: int = 0
    verified_rows: int = 0
    consistent_rows: int = 0
    bad_items: list[str] = field(default_factory=list)  # ids whose row or values are unusable

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RepairReport:
    store: Path
    problems: list[str]
    dropped_items: list[str]
    dropped_rows: int
    kept_items: int
    manifest_rebuilt: bool = False
    damaged_copy: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.dropped_items or self.dropped_rows or self.manifest_rebuilt)


def check(store: str | Path) -> CheckReport:
    """Verify every part of the store at ``store``; never raises for damage (it is listed in ``problems``)."""
    store = Path(store)
    report = CheckReport(store)
    manifest = store / MANIFEST
    if not manifest.is_file():
        raise StoreError(f"no clipmath store at {store}")
    try:
        conn = sqlite3.connect(f"file:{manifest}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        report.problems.append(f"manifest cannot be opened: {exc}")
        return report
    try:
        _check_manifest(conn, store, report)
    finally:
        conn.close()
    return report


def _check_manifest(conn: sqlite3.Connection, store: Path, report: CheckReport) -> None:
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"manifest is not a readable SQLite database: {exc}")
        return
    if verdict != ["ok"]:
        report.problems.append(f"manifest pages are damaged: {'; '.join(verdict[:3])}")
    try:
        meta = read_meta(conn, store)
    except (StoreError, sqlite3.DatabaseError) as exc:
        report.problems.append(_reason(exc))
        return
    if meta.get("vector_source") == "external":  # vectors in an imported embeddings folder
        from clipmath.store.external import check_external

        check_external(conn, meta, report)
        return
    row_bytes = int(meta["dim"]) * vector_dtype(meta).itemsize
    report.vector_rows = committed = int(meta["vector_rows"])
    vector_path = store / meta["vector_file"]
    held = vector_path.stat().st_size // row_bytes if vector_path.is_file() else 0
    if not vector_path.is_file():
        report.problems.append(f"the vector file {meta['vector_file']} is missing")
    elif held < committed:
        report.problems.append(f"the vector file holds {held} rows, the manifest commits {committed} (truncated)")
    report.consistent_rows = _verify_chunks(conn, vector_path, row_bytes, min(held, committed), report)
    _check_items(conn, report)


def _verify_chunks(conn: sqlite3.Connection, vector_path: Path, row_bytes: int, held: int, report: CheckReport) -> int:
    """Hash every committed chunk; returns the rows up to the first chunk that fails (or is not in the file)."""
    try:
        chunks = conn.execute("SELECT first_row, rows, sha256 FROM chunks ORDER BY first_row").fetchall()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            report.notes.append("no vector checksums (store written before checksums existed): rows not verified")
            return held
        report.problems.append(f"the chunk checksums cannot be read: {exc}")
        return 0
    unverified_end = chunks[0][0] if chunks else held
    if not isinstance(unverified_end, int) or unverified_end < 0:
        report.problems.append(f"a chunk has an invalid first row {unverified_end!r}")
        return 0
    if unverified_end:
        report.notes.append(f"vector rows 0..{unverified_end - 1} have no checksum (written before checksums)")
    expected = unverified_end
    with open(vector_path, "rb") if vector_path.is_file() else _empty() as fh:
        for first, rows, digest in chunks:
            if first != expected or not isinstance(rows, int) or rows <= 0:
                report.problems.append(f"vector checksums have a gap or overlap at row {first!r} (expected {expected})")
                return min(expected, held)
            if first + rows > held:
                report.problems.append(f"rows {first}..{first + rows - 1} are committed but not in the vector file")
                return first
            fh.seek(first * row_bytes)
            if hashlib.sha256(fh.read(rows * row_bytes)).hexdigest() != digest:
                report.problems.append(f"vector rows {first}..{first + rows - 1} do not match their checksum")
                return first
            report.verified_rows += rows
            expected = first + rows
    return min(expected, held) if chunks else held


def _check_items(conn: sqlite3.Connection, report: CheckReport) -> None:
    try:
        rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items").fetchall()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"the item table cannot be read: {exc}")
        return
    report.items = len(rows)
    for row in rows:
        fault = item_fault(row, report.vector_rows)
        if fault is None and row[6] >= report.consistent_rows:
            fault = f"its vector (row {row[6]}) is damaged or missing"
        if fault is not None:
            report.bad_items.append(py_id(row[0]) if isinstance(row[0], (str, bytes)) else repr(row[0]))
            if len(report.bad_items) <= MAX_LISTED:
                report.problems.append(f"item {report.bad_items[-1]!r}: {fault}")
    if len(report.bad_items) > MAX_LISTED:
        report.problems.append(f"... and {len(report.bad_items) - MAX_LISTED} more damaged items")


def item_fault(row: tuple, committed_rows: int) -> str | None:
    """Why an item row (in ``_ITEM_COLUMNS`` order) is unusable, or None."""
    item_id, sha256, size, mtime_ns, width, height, vec_row, _ = row
    if not isinstance(item_id, (str, bytes)) or not item_id:
        return "invalid id"
    if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        return f"invalid content hash {sha256!r}"
    if not all(isinstance(v, int) for v in (size, mtime_ns)):
        return "invalid size or mtime"
    if not all(v is None or (isinstance(v, int) and v >= 0) for v in (width, height)):
        return "invalid width or height"
    if not isinstance(vec_row, int) or not 0 <= vec_row < committed_rows:
        return f"vector row {vec_row!r} is outside the {committed_rows} committed rows"
    return None


def repair(store: str | Path) -> RepairReport:
    """Roll the store back to its last consistent commit (see the module docstring); takes the writer lock."""
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


def _rebuild(store: Path, meta: dict[str, str], found: CheckReport) -> RepairReport:
    """Write a new manifest holding the sound part, swap it in (the old one kept), then truncate the vectors."""
    keep_rows = found.consistent_rows
    items, chunks, bad_files, unreadable = _salvage_rows(store / MANIFEST)
    kept, dropped = [], list(unreadable)
    for row in items:
        fault = item_fault(row, keep_rows)
        if fault is None:
            kept.append(row)
        else:
            dropped.append(py_id(row[0]) if isinstance(row[0], (str, bytes)) else repr(row[0]))
    kept_chunks = [c for c in chunks if isinstance(c[0], int) and isinstance(c[1], int) and c[0] + c[1] <= keep_rows]
    fresh = store / f"{MANIFEST}.repair"
    fresh.unlink(missing_ok=True)
    conn = sqlite3.connect(fresh)
    try:
        conn.executescript(SCHEMA)
        with conn:
            write_meta(conn, {**meta, "vector_rows": str(keep_rows)})
            conn.executemany(f"INSERT OR REPLACE INTO items ({_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", kept)
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?)", kept_chunks)
            conn.executemany("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?)", bad_files)
    finally:
        conn.close()
    with open(fresh, "rb") as fh:
        os.fsync(fh.fileno())
    damaged_copy = store / f"{MANIFEST}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.copyfile(store / MANIFEST, damaged_copy)
    for suffix in ("-wal", "-shm"):  # the old write-ahead log must never be applied to the new file
        (store / f"{MANIFEST}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, store / MANIFEST)
    _fsync_dir(store)
    vector_path = store / meta["vector_file"]
    row_bytes = int(meta["dim"]) * vector_dtype(meta).itemsize
    held = vector_path.stat().st_size // row_bytes if vector_path.exists() else 0
    with open(vector_path, "ab") as fh:
        fh.truncate(keep_rows * row_bytes)
        os.fsync(fh.fileno())
    return RepairReport(
        store,
        found.problems,
        sorted(dropped),
        max(0, max(held, int(meta["vector_rows"])) - keep_rows),
        len(kept),
        manifest_rebuilt=True,
        damaged_copy=damaged_copy.name,
    )


def _salvage_rows(manifest: Path) -> tuple[list[tuple], list[tuple], list[tuple], list[str]]:
    """Every item, chunk and bad-file row that can still be read (row by row where a scan fails)."""
    conn = sqlite3.connect(f"file:{manifest}?mode=ro", uri=True)
    try:
        items, unreadable = _read_rows(conn, "items", _ITEM_COLUMNS)
        chunks, _ = _read_rows(conn, "chunks", "first_row, rows, sha256")
        bad_files, _ = _read_rows(conn, "bad_files", "id, reason, size, mtime_ns")
    finally:
        conn.close()
    return items, chunks, bad_files, unreadable


def _read_rows(conn: sqlite3.Connection, table: str, columns: str) -> tuple[list[tuple], list[str]]:
    try:
        return conn.execute(f"SELECT {columns} FROM {table}").fetchall(), []
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            return [], []
    rows, lost = [], 0
    try:
        last = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        last = 100_000
    for rowid in range(1, last + 1):
        try:
            row = conn.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost += 1
            continue
        if row is not None:
            rows.append(row)
    return rows, [f"<{lost} unreadable {table} rows>"] if lost else []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _empty:
    """Stands in for the vector file when it is missing (every chunk then fails)."""

    def __enter__(self) -> _empty:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def seek(self, offset: int) -> None:
        return None

    def read(self, size: int) -> bytes:
        return b""


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text.split(" is damaged: ", 1)[-1].rsplit(" (run: ", 1)[0]
