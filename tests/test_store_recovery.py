"""Repair keeps every row that verifies, never touches a file a reader has mapped, and readers follow it.

One flipped byte anywhere in the vector file of a 10,000-row store costs at most one checksummed block (before and
after compaction); the dropped ids are listed exactly; a store written with checksums never passes a check once its
checksum table is gone; readers (a ``Gallery``, the server's watcher) keep reading their mapped generation and move
to the repaired one.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clipmath.store import Gallery, ItemRecord, check, repair
from clipmath.store.manifest import CHUNK_ROWS, MANIFEST
from tests.test_cli import SRC_ENV

ROWS = 10_000
DIM = 4


def _record(i: int) -> ItemRecord:
    return ItemRecord(f"img_{i:05d}.jpg", hashlib.sha256(str(i).encode()).hexdigest(), 100 + i, 1_000 + i)


def build_store(path: Path, rows: int = ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    """A store of ``rows`` random unit vectors committed in uneven commits; returns id -> vector."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    facts = SimpleNamespace(model_id="toy-model", backend="toy", dim=DIM)
    with Gallery.open_for_writing(path, facts, "toy", path.parent) as gallery:  # type: ignore[arg-type]
        start = 0
        while start < rows:
            stop = min(rows, start + int(rng.integers(1, 3 * CHUNK_ROWS)))
            gallery.commit([_record(i) for i in range(start, stop)], vectors[start:stop])
            start = stop
    return {_record(i).id: vectors[i] for i in range(rows)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    base = tmp_path_factory.mktemp("recovery")
    plain = base / "plain" / "s"
    plain.parent.mkdir()
    vectors = build_store(plain)
    compacted = base / "compacted" / "s"
    shutil.copytree(plain, compacted)
    gone = [_record(i).id for i in range(0, ROWS, 97)]
    with Gallery.open_for_writing(
        compacted, SimpleNamespace(model_id="toy-model", backend="toy", dim=DIM), "toy", plain.parent
    ) as gallery:  # type: ignore[arg-type]
        gallery.remove(gone)
        assert gallery.compact() == len(gone)
    kept = {key: value for key, value in vectors.items() if key not in set(gone)}
    return {"plain": (plain, vectors), "compacted": (compacted, kept)}


def _vector_file(store: Path) -> Path:
    return next(store.glob("vectors-*.f32"))


@pytest.mark.parametrize("kind", ["plain", "compacted"])
def test_one_flipped_byte_anywhere_costs_at_most_one_block(stores, kind, tmp_path):
    source, vectors = stores[kind]
    assert check(source).ok
    rng = np.random.default_rng(1 if kind == "plain" else 2)
    with sqlite3.connect(source / MANIFEST) as conn:
        row_of = dict(conn.execute("SELECT id, vec_row FROM items").fetchall())
        chunks = conn.execute("SELECT first_row, rows FROM chunks").fetchall()
    assert max(rows for _, rows in chunks) <= CHUNK_ROWS
    size = _vector_file(source).stat().st_size
    for trial in range(100):
        store = tmp_path / f"t{trial}"
        shutil.copytree(source, store)
        offset = int(rng.integers(0, size))
        path = _vector_file(store)
        with open(path, "r+b") as fh:
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ 0xFF]))
        row = offset // (DIM * 4)
        first, rows = next((f, n) for f, n in chunks if f <= row < f + n)
        expected = sorted(item for item, r in row_of.items() if first <= r < first + rows)
        fixed = repair(store)
        assert fixed.dropped_items == expected and fixed.dropped_rows == rows <= CHUNK_ROWS
        assert fixed.kept_items == len(vectors) - len(expected)
        if trial % 10 == 0:  # the repaired store itself, in every tenth trial (the rest only as the report says)
            after = Gallery.open(store).snapshot()
            assert check(store).ok and len(after) == fixed.kept_items
            np.testing.assert_array_equal(np.asarray(after.vectors), np.stack([vectors[item] for item in after.ids]))
        shutil.rmtree(store)


def test_an_edited_checksum_costs_one_block_and_a_lost_checksum_table_is_damage(stores, tmp_path):
    source, vectors = stores["plain"]
    store = tmp_path / "edited"
    shutil.copytree(source, store)
    with sqlite3.connect(store / MANIFEST) as conn:
        first, rows = conn.execute("SELECT first_row, rows FROM chunks ORDER BY first_row LIMIT 1 OFFSET 3").fetchone()
        conn.execute("UPDATE chunks SET sha256 = ? WHERE first_row = ?", ("0" * 64, first))
    fixed = repair(store)
    assert fixed.dropped_rows == rows and len(fixed.dropped_items) == rows and check(store).ok

    lost = tmp_path / "lost"
    shutil.copytree(source, lost)
    with sqlite3.connect(lost / MANIFEST) as conn:
        conn.execute("DROP TABLE chunks")
    report = check(lost)  # the store's metadata says it was written with checksums: not an "older store"
    assert not report.ok and any("checksum table is missing" in p for p in report.problems)
    assert report.verified_rows == 0 and report.damaged_rows == ROWS


def test_an_older_store_without_checksums_still_checks_clean(tmp_path):
    store = tmp_path / "old" / "s"
    store.parent.mkdir()
    build_store(store, rows=50)
    with sqlite3.connect(store / MANIFEST) as conn:  # as written before checksums existed
        conn.execute("DROP TABLE chunks")
        conn.execute("DELETE FROM meta WHERE key IN ('vector_dtype', 'checksums_from')")
    report = check(store)
    assert report.ok and report.notes and report.verified_rows == 0


def test_damaged_manifest_pages_give_a_real_dropped_list(stores, tmp_path):
    source, vectors = stores["plain"]
    store = tmp_path / "pages"
    shutil.copytree(source, store)
    with sqlite3.connect(store / MANIFEST) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaf = conn.execute("SELECT pageno FROM dbstat WHERE name = 'items' AND pagetype = 'leaf' LIMIT 1 OFFSET 5")
        page = leaf.fetchone()[0]
    with open(store / MANIFEST, "r+b") as fh:
        fh.seek((page - 1) * page_size + 8)
        fh.write(b"\xa5" * 64)
    fixed = repair(store)
    assert fixed.manifest_rebuilt and all(item in vectors for item in fixed.dropped_items)
    assert 0 < len(fixed.dropped_items) + fixed.unreadable_items < 200
    assert (
        check(store).ok
        and len(Gallery.open(store).snapshot())
        == fixed.kept_items
        == ROWS - len(fixed.dropped_items) - fixed.unreadable_items
    )


_READER = """
import sys, numpy as np
from clipmath.store import Gallery, repair
store = sys.argv[1]
gallery = Gallery.open(store)
old = gallery.snapshot()
before = np.asarray(old.vectors).copy()
path = store + '/' + gallery.meta['vector_file']
with open(path, 'r+b') as fh:  # damage the last block, as a failing disk would
    fh.seek(-3, 2); fh.write(b'xyz')
before[-1] = np.asarray(old.vectors[-1])
fixed = repair(store)
assert fixed.dropped_items, fixed
np.testing.assert_array_equal(np.asarray(old.vectors), before)  # the mapped generation is still whole
new = gallery.snapshot()
assert new.state != old.state and len(new) == fixed.kept_items, (len(new), fixed.kept_items)
print('ok')
"""


def test_a_reader_keeps_its_mapped_generation_and_moves_to_the_repaired_one(stores, tmp_path):
    """In a child process: on a file shortened under its mapping, the reader dies of SIGBUS."""
    source, _ = stores["plain"]
    store = tmp_path / "reader"
    shutil.copytree(source, store)
    result = subprocess.run(
        [sys.executable, "-c", _READER, str(store)], capture_output=True, text=True, timeout=120, env=SRC_ENV
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


def test_readers_follow_a_rebuilt_manifest(stores, tmp_path):
    from clipmath.store.watch import StoreWatcher

    source, _ = stores["plain"]
    store = tmp_path / "follow"
    shutil.copytree(source, store)
    gallery = Gallery.open(store)
    watcher = StoreWatcher(store)
    old = gallery.snapshot()
    with sqlite3.connect(store / MANIFEST) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute("SELECT pageno FROM dbstat WHERE name = 'items' AND pagetype = 'leaf'").fetchone()[0]
    with open(store / MANIFEST, "r+b") as fh:
        fh.seek((page - 1) * page_size + 8)
        fh.write(b"\xa5" * 64)
    fixed = repair(store)
    assert fixed.manifest_rebuilt
    assert watcher.changed() and not watcher.changed()
    new = gallery.snapshot()
    assert len(new) == fixed.kept_items < len(old) and check(store).ok
