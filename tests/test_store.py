"""Gallery store and folder indexer: incremental, bad files, model mixing, locking, compaction."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipmath.errors import StoreError
from clipmath.store import Gallery, IndexConfig, index_folder, list_images
from tests.conftest import write_images


class CountingEncoder:
    """Wraps a real encoder and counts the images it encodes."""

    def __init__(self, encoder) -> None:
        self.inner = encoder
        self.info = encoder.info
        self.transform = encoder.transform
        self.encoded = 0

    def encode_images(self, images, batch_size=32):
        self.encoded += len(images)
        return self.inner.encode_images(images, batch_size=batch_size)


def test_index_then_snapshot_matches_direct_encoding(tmp_path, image_folder, tiny_encoder):
    report = index_folder(tmp_path / "s", image_folder, tiny_encoder, progress=False)
    assert (report.added, report.total, report.bad) == (12, 12, [])
    snapshot = Gallery.open(tmp_path / "s").snapshot()
    assert snapshot.ids == sorted(os.listdir(image_folder))
    direct = tiny_encoder.encode_images([Image.open(image_folder / i) for i in snapshot.ids])
    np.testing.assert_allclose(snapshot.vectors, direct, atol=1e-5)


def test_reindex_is_incremental(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    counting = CountingEncoder(tiny_encoder)
    again = index_folder(store, image_folder, counting, progress=False)
    assert (again.added, again.unchanged, counting.encoded) == (0, 12, 0)

    write_images(image_folder / "new", 3, seed=7)  # three new files
    shutil.copy(image_folder / "img_0000.jpg", image_folder / "copy_of_0.jpg")  # known content, new name
    os.utime(image_folder / "img_0001.png")  # touched, content unchanged
    Image.new("RGB", (30, 30), "red").save(image_folder / "img_0002.jpg")  # content changed
    third = index_folder(store, image_folder, counting, progress=False)
    assert counting.encoded == 4  # 3 new + 1 changed; the copy reuses a stored vector
    assert (third.added, third.reused, third.total) == (4, 1, 16)
    snap = Gallery.open(store).snapshot()
    row = {item: i for i, item in enumerate(snap.ids)}
    np.testing.assert_array_equal(snap.vectors[row["copy_of_0.jpg"]], snap.vectors[row["img_0000.jpg"]])
    red = tiny_encoder.encode_images([Image.open(image_folder / "img_0002.jpg")])[0]
    np.testing.assert_allclose(snap.vectors[row["img_0002.jpg"]], red, atol=1e-5)


def test_prune_and_compact(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    before = Gallery.open(store).snapshot()
    keep = {i: before.vectors[k].copy() for k, i in enumerate(before.ids)}
    (image_folder / "img_0003.png").unlink()
    report = index_folder(store, image_folder, tiny_encoder, progress=False)
    assert (report.missing, report.pruned, report.total) == (1, 0, 12)
    report = index_folder(store, image_folder, tiny_encoder, IndexConfig(prune=True), progress=False)
    assert (report.pruned, report.total) == (1, 11)
    with Gallery.open_for_writing(store, tiny_encoder.info, "clip", image_folder) as gallery:
        assert gallery.info().vector_rows == 11  # pruning compacted: the gone file's row is gone too
        assert gallery.compact() == 0
    after = Gallery.open(store).snapshot()
    assert "img_0003.png" not in after.ids and len(after) == 11
    for k, item in enumerate(after.ids):
        np.testing.assert_array_equal(after.vectors[k], keep[item])


def make_bad_files(folder: Path) -> dict[str, str]:
    """One file of each kind that must be skipped, with a word its reason must contain."""
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    good = folder / "img_0000.jpg"
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (400, 400), "blue").save(folder / "huge.png")  # a "bomb" under the test's pixel limit
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    return {
        "empty.jpg": "empty",
        "notes.png": "not an image",
        "truncated.jpg": "truncated",
        "huge.png": "too many pixels",
        "dangling.jpg": "cannot stat",
    }


def test_bad_files_are_skipped_counted_and_reported(tmp_path, image_folder, tiny_encoder):
    expected = make_bad_files(image_folder)
    config = IndexConfig(max_pixels=100_000, commit_every=5)
    report = index_folder(tmp_path / "s", image_folder, tiny_encoder, config, progress=False)
    reasons = dict(report.bad)
    assert set(reasons) == set(expected)
    for name, word in expected.items():
        assert word in reasons[name], (name, reasons[name])
    assert report.added == 12 and report.total == 12
    gallery = Gallery.open(tmp_path / "s")
    assert dict(gallery.bad_files()) == reasons  # the store says what the run said
    assert gallery.info().bad_files == report.skipped == len(expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_reported(tmp_path, image_folder, tiny_encoder):
    target = image_folder / "img_0001.png"
    target.chmod(0)
    report = index_folder(tmp_path / "s", image_folder, tiny_encoder, progress=False)
    assert dict(report.bad)["img_0001.png"] == "permission denied"


def test_unreadable_file_is_reported_when_open_fails(tmp_path, image_folder, tiny_encoder, monkeypatch):
    """Same case for root: make opening one file fail as a permission error would."""
    real_open = os.open

    def guarded(path, *args, **kwargs):
        if str(path).endswith("img_0001.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    report = index_folder(tmp_path / "s", image_folder, tiny_encoder, progress=False)
    assert dict(report.bad)["img_0001.png"] == "permission denied"
    assert report.added == 11


def test_a_store_refuses_another_model(tmp_path, image_folder, tiny_encoder):
    from clipmath.encoders import load_encoder

    index_folder(tmp_path / "s", image_folder, tiny_encoder, progress=False)
    other = load_encoder("tiny-random-clip:1")
    with pytest.raises(StoreError, match="cannot be mixed"):
        index_folder(tmp_path / "s", image_folder, other, progress=False)
    targetpad = load_encoder("tiny-random-clip", preprocessing="targetpad")
    with pytest.raises(StoreError, match="preprocessing"):
        index_folder(tmp_path / "s", image_folder, targetpad, progress=False)


def test_one_writer_at_a_time(tmp_path, image_folder, tiny_encoder):
    with Gallery.open_for_writing(tmp_path / "s", tiny_encoder.info, "clip", image_folder):
        with pytest.raises(StoreError, match="another clipmath process"):
            Gallery.open_for_writing(tmp_path / "s", tiny_encoder.info, "clip", image_folder)
    Gallery.open_for_writing(tmp_path / "s", tiny_encoder.info, "clip", image_folder).close()


def test_uncommitted_tail_is_discarded_on_reopen(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    vector_file = next(store.glob("vectors-*.f32"))
    size = vector_file.stat().st_size
    with open(vector_file, "ab") as fh:  # what a crash between append and manifest commit leaves behind
        fh.write(b"\x00" * 1000)
    assert len(Gallery.open(store).snapshot()) == 12  # readers ignore the tail
    index_folder(store, image_folder, tiny_encoder, progress=False)
    assert vector_file.stat().st_size == size


def test_missing_store_and_folder_errors(tmp_path, tiny_encoder):
    with pytest.raises(StoreError, match="no clipmath store"):
        Gallery.open(tmp_path / "nothing")
    with pytest.raises(StoreError, match="image folder not found"):
        index_folder(tmp_path / "s", tmp_path / "missing", tiny_encoder, progress=False)


def test_list_images_skips_hidden_non_images_and_the_store(tmp_path):
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / ".hidden", 2)
    (tmp_path / "a" / "readme.txt").write_text("x")
    write_images(tmp_path / "store", 1)
    assert list_images(tmp_path, exclude=tmp_path / "store") == ["a/img_0000.jpg", "a/img_0001.png"]
