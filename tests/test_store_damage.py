"""Damaged stores: every kind of damage is a one-line StoreError naming it (never a traceback), ``check`` finds it
(including bytes changed inside the vector file), and ``repair`` rolls back to the last consistent commit."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from clipmath.errors import StoreError
from clipmath.store import Gallery, IndexConfig, check, index_folder, repair
from clipmath.store.manifest import MANIFEST


@pytest.fixture
def store(tmp_path, image_folder, tiny_encoder):
    path = tmp_path / "s"
    index_folder(path, image_folder, tiny_encoder, IndexConfig(commit_every=4), progress=False)  # 3 chunks of 4
    return path


def _vector_file(store):
    return next(store.glob("vectors-*.f32"))


def _sql(store, statement, *args):
    with sqlite3.connect(store / MANIFEST) as conn:
        conn.execute(statement, args)


def _refused(store) -> str:
    with pytest.raises(StoreError) as info:
        Gallery.open(store).snapshot()
    message = str(info.value)
    assert "\n" not in message and "clipmath check" in message and "--repair" in message
    return message


def test_a_sound_store_checks_clean_and_repair_changes_nothing(store):
    report = check(store)
    assert report.ok and report.items == 12 and report.verified_rows == 12 == report.consistent_rows
    assert not repair(store).changed


def test_truncated_vector_file(store, image_folder, tiny_encoder):
    path = _vector_file(store)
    row = path.stat().st_size // 12
    with open(path, "r+b") as fh:
        fh.truncate(row * 10 + 7)
    assert "truncated" in _refused(store)
    with pytest.raises(StoreError, match="truncated"):
        Gallery.open(store).info()
    assert not check(store).ok
    fixed = repair(store)
    assert fixed.kept_items == 8 and len(fixed.dropped_items) == 4  # rows 8..11: the last chunk of 4
    assert check(store).ok and len(Gallery.open(store).snapshot()) == 8
    again = index_folder(store, image_folder, tiny_encoder, progress=False)  # the next run restores the rest
    assert again.added == 4 and check(store).ok


def test_deleted_vector_file(store):
    _vector_file(store).unlink()
    assert "missing" in _refused(store)
    fixed = repair(store)
    assert fixed.kept_items == 0 and len(fixed.dropped_items) == 12
    assert check(store).ok and len(Gallery.open(store).snapshot()) == 0


def test_random_bytes_over_vectors_are_found_by_a_check(store):
    before = Gallery.open(store).snapshot()
    keep = {item: np.array(before.vectors[i]) for i, item in enumerate(before.ids)}
    path = _vector_file(store)
    row = path.stat().st_size // 12
    with open(path, "r+b") as fh:
        fh.seek(row * 5 + 3)  # inside the second chunk (rows 4..7)
        fh.write(np.random.default_rng(0).bytes(16))
    report = check(store)
    assert not report.ok and report.consistent_rows == 4
    assert any("do not match their checksum" in p for p in report.problems)
    fixed = repair(store)  # only the damaged block goes: the later commit (rows 8..11) verifies and is kept
    assert fixed.kept_items == 8 and fixed.dropped_rows == 4
    assert fixed.dropped_items == sorted(before.ids[4:8])
    after = Gallery.open(store).snapshot()
    assert check(store).ok and len(after) == 8 and set(after.ids) == set(before.ids) - set(before.ids[4:8])
    for i, item in enumerate(after.ids):
        np.testing.assert_array_equal(after.vectors[i], keep[item])


def test_row_pointing_past_the_vector_file(store):
    _sql(store, "UPDATE items SET vec_row = 99 WHERE id = 'img_0003.png'")
    assert "img_0003.png" in _refused(store) and "99" in _refused(store)
    fixed = repair(store)
    assert fixed.dropped_items == ["img_0003.png"] and fixed.kept_items == 11 and check(store).ok


@pytest.mark.parametrize(
    ("statement", "word"),
    [
        ("UPDATE items SET vec_row = 'garbage' WHERE id = 'img_0001.png'", "img_0001.png"),
        ("UPDATE items SET vec_row = -1 WHERE id = 'img_0001.png'", "-1"),
        ("UPDATE meta SET value = 'lots' WHERE key = 'vector_rows'", "vector_rows"),
        ("UPDATE meta SET value = '' WHERE key = 'dim'", "dim"),
        ("DELETE FROM meta WHERE key = 'model_id'", "model_id"),
        ("UPDATE meta SET value = '../../etc/passwd' WHERE key = 'vector_file'", "vector file"),
        ("DROP TABLE items", "items"),
    ],
)
def test_garbage_values_and_dropped_tables(store, statement, word):
    _sql(store, statement)
    with pytest.raises(StoreError) as info:
        Gallery.open(store).snapshot()
    assert word in str(info.value) and "--repair" in str(info.value) and "\n" not in str(info.value)
    assert not check(store).ok


def test_a_dropped_item_table_is_rebuilt_empty(store):
    _sql(store, "DROP TABLE items")
    fixed = repair(store)
    assert fixed.changed and not fixed.manifest_rebuilt  # SQLite reads the rest: fixed in one transaction
    assert check(store).ok and len(Gallery.open(store).snapshot()) == 0


def test_zero_byte_manifest(store, image_folder, tiny_encoder):
    for suffix in ("-wal", "-shm"):
        (store / f"{MANIFEST}{suffix}").unlink(missing_ok=True)
    (store / MANIFEST).write_bytes(b"")
    assert "no meta" in _refused(store)
    with pytest.raises(StoreError, match="--repair"):  # never re-initialised over the existing vectors
        index_folder(store, image_folder, tiny_encoder, progress=False)
    assert _vector_file(store).stat().st_size > 0
    with pytest.raises(StoreError, match="cannot be repaired"):
        repair(store)


def test_manifest_with_a_good_header_and_damaged_pages(store):
    with sqlite3.connect(store / MANIFEST) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    with open(store / MANIFEST, "r+b") as fh:
        for page in range(1, pages):  # every page but the first (the header stays good)
            fh.seek(page * page_size + 8)
            fh.write(b"\xa5" * 64)
    with pytest.raises(StoreError) as info:
        Gallery.open(store).snapshot()
    assert "damaged" in str(info.value) and "\n" not in str(info.value)
    assert not check(store).ok


def test_not_a_database_at_all(store):
    for suffix in ("-wal", "-shm"):
        (store / f"{MANIFEST}{suffix}").unlink(missing_ok=True)
    (store / MANIFEST).write_bytes(b"this is not sqlite" * 100)
    message = _refused(store)
    assert "manifest" in message
    assert not check(store).ok


def test_check_command_reports_and_repairs(store, tmp_path):
    from typer.testing import CliRunner

    from clipmath.cli import app

    runner = CliRunner()
    clean = runner.invoke(app, ["check", str(store)])
    assert clean.exit_code == 0 and ": ok" in clean.output
    path = _vector_file(store)
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 12 * 9)  # inside the last chunk (rows 8..11)
        fh.write(b"\xff" * 8)
    damaged = runner.invoke(app, ["check", str(store)])
    assert damaged.exit_code == 1 and "do not match their checksum" in damaged.output and "--repair" in damaged.output
    fixed = runner.invoke(app, ["check", str(store), "--repair"])
    assert fixed.exit_code == 0 and "dropped 4 items" in fixed.output
    assert runner.invoke(app, ["check", str(store)]).exit_code == 0


def test_a_float16_store_is_checked_and_repaired_the_same_way(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "half"
    index_folder(store, image_folder, tiny_encoder, IndexConfig(commit_every=6, dtype="float16"), progress=False)
    assert Gallery.open(store).info().vector_dtype == "float16"
    assert check(store).ok and check(store).verified_rows == 12
    path = _vector_file(store)
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size - 4)
        fh.write(b"\x00\x7c\x00\x7c")  # two float16 infinities in the last row
    assert check(store).consistent_rows == 6
    assert repair(store).kept_items == 6 and check(store).ok
