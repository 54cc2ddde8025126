"""Photo metadata at index time (EXIF date, camera, GPS, size, folder) and the migration of older stores."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipmath.store import Gallery, index_folder, photometa
from clipmath.store.photometa import all_photo_meta, pending, summary

MAIN_SRC = Path("/work/main/src")


def exif_photo(path: Path, taken: str, make: str, model: str, gps: tuple[float, float] | None, colour: str) -> None:
    image = Image.new("RGB", (64, 48), colour)
    exif = image.getexif()
    exif[271], exif[272] = make, model
    exif.get_ifd(0x8769)[36867] = taken
    if gps is not None:
        lat, lon = gps

        def dms(value: float) -> tuple[float, float, float]:
            value = abs(value)
            return (float(int(value)), float(int(value * 60 % 60)), round(value * 3600 % 60, 4))

        exif.get_ifd(0x8825).update(
            {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    exif_photo(root / "2019" / "beach.jpg", "2019:07:14 16:05:09", "Canon", "EOS 80D", (48.8583, -2.2945), "blue")
    exif_photo(root / "2023" / "x" / "dog.jpg", "2023:01:02 08:00:00", "Apple", "iPhone 13", None, "brown")
    Image.new("RGB", (30, 20), "green").save(root / "plain.png")  # no EXIF: dated by its file time
    os.utime(root / "plain.png", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    return root


def test_index_time_metadata_is_stored_and_read_back(tmp_path, photo_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, photo_folder, tiny_encoder, progress=False)
    with Gallery.open(store) as gallery:
        metas = all_photo_meta(gallery)
        beach, dog, plain = metas["2019/beach.jpg"], metas["2023/x/dog.jpg"], metas["plain.png"]
        assert (beach.taken, beach.taken_from, beach.camera) == ("2019-07-14T16:05:09", "exif", "Canon EOS 80D")
        assert beach.gps is not None and abs(beach.gps[0] - 48.8583) < 1e-3 and abs(beach.gps[1] + 2.2945) < 1e-3
        assert (beach.width, beach.height, beach.folder) == (64, 48, "2019")
        assert dog.folder == "2023/x" and dog.gps is None and dog.camera == "Apple iPhone 13"
        assert (plain.taken, plain.taken_from, plain.camera, plain.folder) == (
            "2020-09-13T12:26:40+00:00",
            "file",
            None,
            "",
        )
        facts = summary(gallery)
    assert facts["dated_by_exif"] == 2 and facts["with_gps"] == 1 and facts["awaiting_metadata"] == 0
    assert facts["cameras"] == {"Canon EOS 80D": 1, "Apple iPhone 13": 1} and facts["folders"] == 3


def test_a_damaged_exif_block_never_stops_indexing(tmp_path, tiny_encoder):
    root = tmp_path / "photos"
    exif_photo(root / "odd.jpg", "not a date", "\x00", "", None, "red")
    report = index_folder(tmp_path / "s", root, tiny_encoder, progress=False)
    assert report.added == 1 and not report.bad
    with Gallery.open(tmp_path / "s") as gallery:
        meta = all_photo_meta(gallery)["odd.jpg"]
    assert meta.taken_from == "file" and meta.camera is None


def _index_with_main(store: Path, root: Path) -> None:
    """Write ``store`` with the code of main (before photo metadata existed)."""
    code = (
        "import sys; from clipmath.encoders import load_encoder; from clipmath.store import index_folder; "
        "index_folder(sys.argv[1], sys.argv[2], load_encoder('tiny-random-clip'), progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(MAIN_SRC)}
    subprocess.run([sys.executable, "-c", code, str(store), str(root)], check=True, env=env, timeout=300)


def _legacy_store(tmp_path: Path, root: Path, tiny_encoder) -> Path:
    store = tmp_path / "old"
    if (MAIN_SRC / "clipmath" / "store" / "photometa.py").exists() or not MAIN_SRC.is_dir():
        index_folder(store, root, tiny_encoder, progress=False)  # main has it (or is absent): strip it as old code
        with sqlite3.connect(store / "manifest.sqlite") as conn:
            conn.execute("UPDATE items SET extra = NULL")
        conn.close()
    else:
        _index_with_main(store, root)
    return store


def test_an_older_store_opens_and_gains_metadata_without_losing_anything(tmp_path, photo_folder, tiny_encoder):
    store = _legacy_store(tmp_path, photo_folder, tiny_encoder)
    with Gallery.open(store) as gallery:
        before = gallery.snapshot()
        ids, vectors = list(before.ids), np.array(before.vectors)
        assert sorted(pending(gallery)) == sorted(ids)
        old = all_photo_meta(gallery)["2019/beach.jpg"]  # readable before migration: file date, folder, size
        assert old.taken_from == "file" and old.folder == "2019" and old.width == 64
    report = index_folder(store, photo_folder, tiny_encoder, progress=False)
    assert report.migrated == 3 and report.added == 0
    with Gallery.open(store) as gallery:
        after = gallery.snapshot()
        assert after.ids == ids and np.array_equal(np.array(after.vectors), vectors)
        assert all_photo_meta(gallery)["2019/beach.jpg"].taken == "2019-07-14T16:05:09" and not pending(gallery)
    assert index_folder(store, photo_folder, tiny_encoder, progress=False).migrated == 0


def test_an_interrupted_migration_keeps_its_done_part_and_resumes(tmp_path, photo_folder, tiny_encoder, monkeypatch):
    store = tmp_path / "s"
    index_folder(store, photo_folder, tiny_encoder, progress=False)
    with sqlite3.connect(store / "manifest.sqlite") as conn:
        conn.execute("UPDATE items SET extra = NULL")
    conn.close()
    monkeypatch.setattr(photometa, "BACKFILL_ROWS", 1)
    calls = []
    real = photometa.with_photo_meta

    def crash_on_second(record, path):
        calls.append(record.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(record, path)

    monkeypatch.setattr(photometa, "with_photo_meta", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        index_folder(store, photo_folder, tiny_encoder, progress=False)
    with Gallery.open(store) as gallery:
        assert len(pending(gallery)) == 2 and gallery.info().count == 3
        done = {i: json.loads(r) for i, r in gallery._conn.execute("SELECT id, extra FROM items") if r}
    assert list(done) == [calls[0]] and done[calls[0]]["photo_meta"] == 1
    monkeypatch.setattr(photometa, "with_photo_meta", real)
    assert index_folder(store, photo_folder, tiny_encoder, progress=False).migrated == 2


def test_cli_info_and_search_show_metadata_and_take_the_controls(tmp_path, photo_folder):
    from typer.testing import CliRunner

    from clipmath.cli import app

    runner, store = CliRunner(), str(tmp_path / "s")
    done = runner.invoke(app, ["index", str(photo_folder), "--store", store, "--model", "tiny-random-clip", "--json"])
    assert done.exit_code == 0, done.output
    info = runner.invoke(app, ["info", store])
    assert info.exit_code == 0 and "Canon EOS 80D (1)" in info.output and "2019-07-14T16:05:09" in info.output
    found = runner.invoke(
        app, ["search", "--store", store, "--image", str(photo_folder / "plain.png"), "--json", "--camera", "canon"]
    )
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert [r["id"] for r in payload["results"]] == ["2019/beach.jpg"] and payload["exhausted"]
    assert payload["results"][0]["photo"]["camera"] == "Canon EOS 80D"
    table = runner.invoke(
        app, ["search", "--store", store, "--text", "a dog", "--sort", "date", "--after", "2019-07-15"]
    )
    assert table.exit_code == 0 and "2023/x/dog.jpg" in table.output and "beach" not in table.output
    none = runner.invoke(app, ["search", "--store", store, "--text", "a dog", "--camera", "hasselblad"])
    assert none.exit_code == 0 and "no results: no item passes the filters" in none.output and "┃" not in none.output


def test_a_bad_date_is_one_error_line(tmp_path, photo_folder, tiny_encoder, monkeypatch, capsys):
    from clipmath.cli import main

    index_folder(tmp_path / "s", photo_folder, tiny_encoder, progress=False)
    argv = ["clipmath", "search", "--store", str(tmp_path / "s"), "--text", "a dog", "--before", "soon"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error:") and "before" in err and len(err.splitlines()) == 1
