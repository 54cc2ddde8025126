"""Find damage in a store (:func:`check`; :mod:`clipmath.store.repair` repairs it to the rows that still verify).

A check reads everything: the manifest's own integrity (SQLite ``integrity_check``), its tables and meta values,
every item row (types, content hash, vector row inside the committed rows), the vector file's length, and the
SHA-256 of every checksummed block of vector rows (one per commit, one per :data:`CHUNK_ROWS` rows at most) — so
bytes changed inside the vector file are found, and pinned to the block that holds them.

Whether rows must have a checksum is the store's metadata's word (``checksums_from``; a store written with
checksums never passes as an older one because its checksum table is gone). Only rows an older clipmath committed
before checksums existed are trusted unverified.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from clipmath.errors import StoreError
from clipmath.store.manifest import (
    MANIFEST,
    checksums_from,
    chunk_digest,
    py_id,
    read_meta,
    vector_dtype,
)

#: Problems listed one by one before the rest are counted.
MAX_LISTED = 20
ITEM_COLUMNS = "id, sha256, size, mtime_ns, width, height, vec_row, extra"
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
    states = _verify_chunks(conn, meta, vector_path, row_bytes, min(held, committed), report)
    report._states = states
    bad = np.flatnonzero(states != _GOOD)
    report.consistent_rows = int(bad[0]) if len(bad) else committed
    report.damaged_ranges = _runs(bad) + ([(len(states), committed)] if committed > len(states) else [])
    report.damaged_rows = sum(end - first for first, end in report.damaged_ranges)
    _check_items(conn, report)
    _note_incomplete_videos(conn, report)


def _note_incomplete_videos(conn: sqlite3.Connection, report: CheckReport) -> None:
    """A note (not damage) per video with fewer frame rows than its version has: ``repair`` dropped some."""
    from clipmath.store.video import read_videos  # the indexer's own reading of the frame rows

    try:
        videos = read_videos(conn)
    except (sqlite3.Error, ValueError):  # a manifest too damaged to read is reported above
        return
    for name, video in sorted(videos.items()):
        if not video.complete:
            report.notes.append(
                f"video {name}: {len(video.frames)} of its {video.expected} frames (the next index run reads it again)"
            )


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
        rows = conn.execute(f"SELECT {ITEM_COLUMNS} FROM items").fetchall()
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
            report.bad_items.append(id_text(row[0]))
            if len(report.bad_items) <= MAX_LISTED:
                report.problems.append(f"item {report.bad_items[-1]!r}: {fault}")
    if len(report.bad_items) > MAX_LISTED:
        report.problems.append(f"... and {len(report.bad_items) - MAX_LISTED} more damaged items")


def id_text(value: object) -> str:
    return py_id(value) if isinstance(value, (str, bytes)) else repr(value)


def item_fault(row: tuple, committed_rows: int) -> str | None:
    """Why an item row (in ``ITEM_COLUMNS`` order) is unusable, or None."""
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
