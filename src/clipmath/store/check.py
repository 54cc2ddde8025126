"""Find damage in a store (:func:`check`) and repair it to the rows that still verify (:func:`repair`).

A check reads everything: the manifest's own integrity (SQLite ``integrity_check``), its tables and meta values,
every item row (types, content hash, vector row inside the committed rows), the vector file's length, and the
SHA-256 of every checksummed block of vector rows (one per commit, one per :data:`CHUNK_ROWS` rows at most) — so
bytes changed inside the vector file are found, and pinned to the block that holds them.

Whether rows must have a checksum is the store's metadata's word (``checksums_from``; a store written with
checksums never passes as an older one because its checksum table is gone). Only rows an older clipmath committed
before checksums existed are trusted unverified.

A repair keeps every item whose values are sound and whose vector row verifies, wherever it lies, and drops (and
lists) only the others. It never shortens or rewrites a file a reader may have mapped: the kept rows are written to
a new vector file (the next generation, with fresh block checksums), the manifest switches to it in one transaction
(or, where SQLite can no longer read it, is rebuilt and renamed into place, the damaged one kept beside it), and
only then is the old vector file unlinked. Readers (a server, a ``Retriever``) notice the new generation and reopen.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from clipmath.errors import StoreError
from clipmath.store.manifest import (
    CHUNK_ROWS,
    LOCK,
    MANIFEST,
    SCHEMA,
    checksums_from,
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

#: Problems listed one by one before the rest are counted.
MAX_LISTED = 20
_ITEM_COLUMNS = "id, sha256, size, mtime_ns, width, height, vec_row, extra"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Row states while checking (a row not covered by any checksum stays UNCOVERED until it is judged).
_UNCOVERED, _GOOD, _BAD = 0, 1, 2


@dataclass
class CheckReport:
    """What :func:`check` found.

    ``damaged_ranges``: ``[first, end)`` runs of committed vector rows that fail their checksum, lack one they must
    have, or are missing from the file; ``consistent_rows``: rows before the first damaged one; ``bad_items``: ids
    whose row or values are unusable; ``manifest_sound``: SQLite reads the manifest whole (a repair can then fix it
    in place)."""

    store: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    items: int = 0
    vector_rows: int = 0
    verified_rows: int = 0
    consistent_rows: int = 0
    damaged_rows: int = 0
    damaged_ranges: list[tuple[int, int]] = field(default_factory=list)
    bad_items: list[str] = field(default_factory=list)
    manifest_sound: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    def row_usable(self, row: int) -> bool:
        """Whether committed vector row ``row`` verified (or is an older store's trusted row)."""
        return self._states is not None and 0 <= row < len(self._states) and self._states[row] == _GOOD

    #: each committed row's state (set by :func:`check`; not a field, so reports stay plain data)
    _states: ClassVar[np.ndarray | None] = None
    #: first rows of the checksummed blocks that verified (a repair keeps their boundaries)
    _block_starts: ClassVar[list[int]] = []


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
        report.manifest_sound = False
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
        report.manifest_sound = False
        return
    if verdict != ["ok"]:
        lines = [line for text in verdict for line in str(text).splitlines() if line and not line.startswith("***")]
        report.problems.append(f"manifest pages are damaged: {'; '.join(lines[:3])}")
        report.manifest_sound = False
    try:
        meta = read_meta(conn, store)
    except (StoreError, sqlite3.DatabaseError) as exc:
        report.problems.append(_reason(exc))
        return
    row_bytes = int(meta["dim"]) * vector_dtype(meta).itemsize
    report.vector_rows = committed = int(meta["vector_rows"])
    vector_path = store / meta["vector_file"]
    held = vector_path.stat().st_size // row_bytes if vector_path.is_file() else 0
    if not vector_path.is_file():
        report.problems.append(f"the vector file {meta['vector_file']} is missing")
    elif held < committed:
        report.problems.append(f"the vector file holds {held} rows, the manifest commits {committed} (truncated)")
    states = _verify_chunks(conn, meta, vector_path, row_bytes, min(held, committed), report)
    report._states = states
    bad = np.flatnonzero(states != _GOOD)
    report.consistent_rows = int(bad[0]) if len(bad) else committed
    report.damaged_ranges = _runs(bad) + ([(len(states), committed)] if committed > len(states) else [])
    report.damaged_rows = sum(end - first for first, end in report.damaged_ranges)
    _check_items(conn, report)


def _verify_chunks(
    conn: sqlite3.Connection, meta: dict[str, str], vector_path: Path, row_bytes: int, held: int, report: CheckReport
) -> np.ndarray:
    """Hash every checksummed block; returns the state of each committed row present in the file."""
    states = np.full(held, _UNCOVERED, dtype=np.int8)
    report._block_starts = []
    committed = int(meta["vector_rows"])
    faults: list[str] = []
    try:
        chunks = conn.execute("SELECT first_row, rows, sha256 FROM chunks ORDER BY first_row").fetchall()
    except sqlite3.DatabaseError as exc:
        if "no such table" not in str(exc):
            report.problems.append(f"the chunk checksums cannot be read: {exc}")
            report.manifest_sound = False
        chunks = None
    valid = [c for c in chunks or () if all(isinstance(v, int) for v in c[:2]) and c[0] >= 0 and c[1] > 0]
    if chunks is not None and len(valid) < len(chunks):
        faults.append(f"{len(chunks) - len(valid)} checksum row(s) hold invalid values")
    bad_ranges = []
    with open(vector_path, "rb") if vector_path.is_file() else _empty() as fh:
        for first, rows, digest in valid:
            end = first + rows
            if end > committed:
                faults.append(f"a checksum covers rows {first}..{end - 1}, past the {committed} committed")
                bad_ranges.append((first, end))
            elif end > held:
                faults.append(f"rows {first}..{end - 1} are committed but not in the vector file")
                bad_ranges.append((first, end))
            else:
                fh.seek(first * row_bytes)
                if not isinstance(digest, str) or chunk_digest(fh.read(rows * row_bytes)) != digest:
                    faults.append(f"vector rows {first}..{end - 1} do not match their checksum")
                    bad_ranges.append((first, end))
                else:
                    states[first:end] = _GOOD
                    report._block_starts.append(first)
    for first, end in bad_ranges:  # a row some checksum rejects is damaged even if another accepts it
        states[first : min(end, held)] = _BAD
    report.verified_rows = int(np.count_nonzero(states == _GOOD))
    start = checksums_from(meta, min((c[0] for c in valid), default=None) if chunks is not None else None)
    unchecked = np.flatnonzero(states[start:] == _UNCOVERED) + start if start < held else np.empty(0, np.int64)
    if chunks is None and start < committed:
        faults.append(
            f"the checksum table is missing, but the store's metadata says rows from {start} were checksummed"
        )
    elif len(unchecked):
        faults += [f"vector rows {a}..{b - 1} have no checksum" for a, b in _runs(unchecked)]
    states[unchecked] = _BAD
    older = int(np.count_nonzero(states[: min(start, held)] == _UNCOVERED))
    states[states == _UNCOVERED] = _GOOD  # an older store's first rows: trusted
    if chunks is None and older:
        report.notes.append("no vector checksums (store written before checksums existed): rows not verified")
    elif older:
        report.notes.append(f"vector rows 0..{older - 1} have no checksum (written before checksums)")
    report.problems += faults[:MAX_LISTED]
    if len(faults) > MAX_LISTED:
        report.problems.append(f"... and {len(faults) - MAX_LISTED} more damaged blocks")
    return states


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row numbers as ``[first, end)`` runs of consecutive rows."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.concatenate(([rows[0]], rows[breaks + 1]))
    ends = np.concatenate((rows[breaks], [rows[-1]])) + 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def _check_items(conn: sqlite3.Connection, report: CheckReport) -> None:
    try:
        rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items").fetchall()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"the item table cannot be read: {exc}")
        report.manifest_sound = report.manifest_sound and "no such table" in str(exc)
        return
    report.items = len(rows)
    for row in rows:
        fault = item_fault(row, report.vector_rows)
        if fault is None and not report.row_usable(row[6]):
            fault = f"its vector (row {row[6]}) is damaged or missing"
        if fault is not None:
            report.bad_items.append(_id_text(row[0]))
            if len(report.bad_items) <= MAX_LISTED:
                report.problems.append(f"item {report.bad_items[-1]!r}: {fault}")
    if len(report.bad_items) > MAX_LISTED:
        report.problems.append(f"... and {len(report.bad_items) - MAX_LISTED} more damaged items")


def _id_text(value: object) -> str:
    return py_id(value) if isinstance(value, (str, bytes)) else repr(value)


def item_fault(row: tuple, committed_rows: int) -> str | None:
    """Why an item row (in ``_ITEM_COLUMNS`` order) is unusable, or None."""
    item_id, sha256, size, mtime_ns, width, height, vec_row, _ = row
    if (  # the common case, quickly: every value sound
        type(vec_row) is int
        and 0 <= vec_row < committed_rows
        and type(size) is int
        and type(mtime_ns) is int
        and (width is None or (type(width) is int and width >= 0))
        and (height is None or (type(height) is int and height >= 0))
        and item_id
        and isinstance(item_id, (str, bytes))
        and type(sha256) is str
        and _SHA256.fullmatch(sha256) is not None
    ):
        return None
    if not isinstance(item_id, (str, bytes)) or not item_id:
        return "invalid id"
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        return f"invalid content hash {sha256!r}"
    if not all(isinstance(v, int) for v in (size, mtime_ns)):
        return "invalid size or mtime"
    if not all(v is None or (isinstance(v, int) and v >= 0) for v in (width, height)):
        return "invalid width or height"
    if not isinstance(vec_row, int) or not 0 <= vec_row < committed_rows:
        return f"vector row {vec_row!r} is outside the {committed_rows} committed rows"
    return None


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
            dropped.append(_id_text(row[0]))
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
        conn.executemany(f"INSERT OR REPLACE INTO items ({_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", items)
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
        items, lost = _read_rows(conn, "items", _ITEM_COLUMNS)
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


class _empty:
    """Stands in for the vector file when it is missing (every block then fails)."""

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
