"""Hostile folders: names that are not UTF-8, special files, symlinks out of the folder, EXIF orientation, and the
skipped-file count that the run's report and the store agree on."""

from __future__ import annotations

import io
import os
import socket
import threading

import numpy as np
from PIL import Image

from clipmath.store import Gallery, IndexConfig, index_folder


def _index(store, folder, encoder, **config):
    return index_folder(store, folder, encoder, IndexConfig(**config), progress=False)


def _in_thread(action, timeout=60.0):
    """Run ``action`` on a thread and fail (instead of hanging the test run) if it does not return in time."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(action()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "indexing hung"
    return result[0]


def test_names_that_are_not_utf8_are_indexed_losslessly(tmp_path, image_folder, tiny_encoder):
    raw = os.fsencode(image_folder) + b"/caf\xe9-\xff\xfe.png"  # Latin-1 bytes: not valid UTF-8
    Image.new("RGB", (20, 20), "green").save(raw.decode("utf-8", "surrogateescape"))
    store = tmp_path / "s"
    report = _index(store, image_folder, tiny_encoder, commit_every=3)
    assert report.added == 13 and not report.bad
    snapshot = Gallery.open(store).snapshot()
    (odd,) = [item for item in snapshot.ids if item.startswith("caf")]
    assert os.fsencode(odd) == b"caf\xe9-\xff\xfe.png"  # the exact bytes come back
    assert snapshot.path_of(odd).is_file()
    again = _index(store, image_folder, tiny_encoder)  # incremental: recognised, not re-added
    assert (again.added, again.unchanged) == (0, 13)
    assert Gallery.open(store).record(odd).width == 20


def test_special_files_are_skipped_without_opening(tmp_path, image_folder, tiny_encoder):
    os.mkfifo(image_folder / "pipe.jpg")
    os.symlink("/dev/zero", image_folder / "device.png")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(image_folder / "sock.jpg"))
    try:
        report = _in_thread(lambda: _index(tmp_path / "s", image_folder, tiny_encoder, follow_symlinks=True))
    finally:
        listener.close()
    reasons = dict(report.bad)
    assert "named pipe" in reasons["pipe.jpg"]
    assert "device" in reasons["device.png"]
    assert "socket" in reasons["sock.jpg"]
    assert report.added == 12


def test_symlinks_out_of_the_folder_are_skipped_unless_followed(tmp_path, image_folder, tiny_encoder):
    outside = tmp_path / "private"
    outside.mkdir()
    Image.new("RGB", (20, 20), "red").save(outside / "secret.png")
    os.symlink(outside / "secret.png", image_folder / "leak.png")
    os.symlink(outside, image_folder / "leaked_dir")
    os.symlink(image_folder / "img_0000.jpg", image_folder / "inside_link.jpg")  # stays inside: indexed

    report = _index(tmp_path / "s", image_folder, tiny_encoder)
    assert "outside the indexed folder" in dict(report.bad)["leak.png"]
    ids = Gallery.open(tmp_path / "s").snapshot().ids
    assert "leak.png" not in ids and "inside_link.jpg" in ids
    assert not any(item.startswith("leaked_dir/") for item in ids)

    followed = _index(tmp_path / "f", image_folder, tiny_encoder, follow_symlinks=True)
    assert not followed.bad
    ids = Gallery.open(tmp_path / "f").snapshot().ids
    assert {"leak.png", "leaked_dir/secret.png"} <= set(ids)


def test_a_symlink_loop_is_walked_once(tmp_path, image_folder, tiny_encoder):
    os.symlink(image_folder, image_folder / "loop")
    report = _in_thread(lambda: _index(tmp_path / "s", image_folder, tiny_encoder, follow_symlinks=True))
    assert report.scanned == 12


def test_exif_orientation_is_applied_before_embedding(tmp_path, tiny_encoder):
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((40, 80, 3)) * 255).astype(np.uint8)
    stored = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90° clockwise
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    (folder / "phone.jpg").write_bytes(buffer.getvalue())
    _index(tmp_path / "s", folder, tiny_encoder)
    gallery = Gallery.open(tmp_path / "s")
    record = gallery.record("phone.jpg")
    assert (record.width, record.height) == (40, 80)
    shown = Image.open(folder / "phone.jpg").transpose(Image.Transpose.ROTATE_270)
    expected = tiny_encoder.encode_images([shown.convert("RGB")])[0]
    sideways = tiny_encoder.encode_images([Image.open(folder / "phone.jpg").convert("RGB")])[0]
    vector = gallery.snapshot().vectors[0]
    assert float(vector @ expected) > float(vector @ sideways)
    np.testing.assert_allclose(vector, expected, atol=1e-4)


def test_skipped_count_agrees_between_run_and_store_across_runs(tmp_path, image_folder, tiny_encoder):
    (image_folder / "empty.jpg").write_bytes(b"")
    os.symlink(image_folder / "nowhere.png", image_folder / "dangling.png")
    store = tmp_path / "s"
    first = _index(store, image_folder, tiny_encoder)
    assert first.skipped == 2 == Gallery.open(store).info().bad_files
    (image_folder / "empty.jpg").unlink()  # a skipped file removed: no longer counted
    second = _index(store, image_folder, tiny_encoder)
    assert second.skipped == 1 == Gallery.open(store).info().bad_files
    assert [item for item, _ in Gallery.open(store).bad_files()] == ["dangling.png"]


def test_follow_symlinks_flag_of_the_index_command(tmp_path, image_folder):
    from typer.testing import CliRunner

    from clipmath.cli import app

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (20, 20), "red").save(outside / "secret.png")
    os.symlink(outside / "secret.png", image_folder / "leak.png")
    runner = CliRunner()
    common = ["index", str(image_folder), "--model", "tiny-random-clip", "--json"]
    plain = runner.invoke(app, [*common, "--store", str(tmp_path / "a")])
    assert plain.exit_code == 0 and "outside the indexed folder" in plain.output
    assert "leak.png" not in Gallery.open(tmp_path / "a").snapshot().ids
    followed = runner.invoke(app, [*common, "--store", str(tmp_path / "b"), "--follow-symlinks"])
    assert followed.exit_code == 0 and "leak.png" in Gallery.open(tmp_path / "b").snapshot().ids
