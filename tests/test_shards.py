"""Webdataset tar shards as an index source: same vectors as a folder, per-shard resume after kill -9, bad samples
and truncated tars reported, finished shards skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("webdataset")
import webdataset as wds  # noqa: E402

from clipmath.store import Gallery, IndexConfig, index_folder  # noqa: E402
from clipmath.store.shard_indexer import index_shards  # noqa: E402
from clipmath.store.shards import expand_shards, is_shard_spec  # noqa: E402
from tests.conftest import write_images  # noqa: E402
from tests.test_crash_safety import committed_rows  # noqa: E402

SRC = str(Path(__file__).resolve().parent.parent / "src")
SRC_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.getenv("PYTHONPATH", "")])}
PER_SHARD = 8


def write_shards(folder: Path, images: Path, names: list[str], per_shard: int = PER_SHARD) -> list[Path]:
    """img2dataset's layout: NNNNN.tar with KEY.jpg/.png, KEY.txt (caption), KEY.json (metadata) per sample."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(names), per_shard)):
        path = folder / f"{number:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for name in names[start : start + per_shard]:
                key, ext = name.rsplit(".", 1)
                meta = {"key": key, "url": f"http://example.invalid/{name}", "status": "success"}
                sink.write({"__key__": key, ext: (images / name).read_bytes(), "txt": f"a photo {key}", "json": meta})
        shards.append(path)
    return shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    names = write_images(base / "images", 24, seed=5, size=(24, 24))
    shards = write_shards(base / "shards", base / "images", names)
    return base, names, shards


def test_index_from_shards_equals_index_from_the_folder_vector_for_vector(corpus, tmp_path, tiny_encoder):
    base, names, shards = corpus
    config = IndexConfig(commit_every=PER_SHARD, batch_size=4)
    index_folder(tmp_path / "folder.store", base / "images", tiny_encoder, config, progress=False)
    report = index_shards(tmp_path / "shards.store", shards, tiny_encoder, config, progress=False)
    assert (report.added, report.scanned, report.bad) == (len(names), len(names), [])

    folder, from_shards = Gallery.open(tmp_path / "folder.store"), Gallery.open(tmp_path / "shards.store")
    a, b = folder.snapshot(), from_shards.snapshot()
    expected_ids = [f"{i // PER_SHARD:05d}/{name.rsplit('.', 1)[0]}" for i, name in enumerate(names)]
    assert b.ids == expected_ids
    for name, shard_id in zip(names, expected_ids):
        assert np.array_equal(a.vectors[a.row_of(name)], b.vectors[b.row_of(shard_id)]), name
    record = from_shards.record(expected_ids[3])
    assert record.extra["caption"] == f"a photo {names[3].rsplit('.', 1)[0]}"
    assert record.extra["meta"]["url"].endswith(names[3]) and (record.width, record.height) == (24, 24)
    assert from_shards.root == base / "shards"


def test_brace_patterns_folders_and_lists_name_the_same_shards(corpus):
    base, _, shards = corpus
    pattern = str(base / "shards" / "{00000..00002}.tar")
    assert is_shard_spec(pattern) and is_shard_spec(str(base / "shards")) and not is_shard_spec(str(base / "images"))
    assert expand_shards([pattern]) == shards
    assert expand_shards([str(base / "shards")]) == shards
    assert expand_shards([str(s) for s in shards[:2]]) == shards[:2]


def test_a_finished_shard_is_skipped_without_reading_it(corpus, tmp_path, tiny_encoder, monkeypatch):
    _, names, shards = corpus
    store = tmp_path / "store"
    index_shards(store, shards[:2], tiny_encoder, IndexConfig(commit_every=3), progress=False)
    read = []
    from clipmath.store import shard_indexer

    original = shard_indexer.read_shard
    monkeypatch.setattr(shard_indexer, "read_shard", lambda path, outcome: read.append(path) or original(path, outcome))
    report = index_shards(store, shards, tiny_encoder, IndexConfig(commit_every=3), progress=False)
    assert read == [shards[2]]  # the two finished shards are not opened again
    assert (report.unchanged, report.added, report.scanned) == (2 * PER_SHARD, PER_SHARD, len(names))
    assert Gallery.open(store).info().count == len(names)


def test_a_corrupt_sample_a_sample_without_image_and_a_truncated_tar_are_skipped_and_listed(
    corpus, tmp_path, tiny_encoder
):
    base, names, _ = corpus
    folder = tmp_path / "bad"
    shards = write_shards(folder, base / "images", names[:16])
    with wds.TarWriter(str(folder / "00002.tar")) as sink:
        sink.write({"__key__": "broken", "jpg": b"\xff\xd8 not really a jpeg", "txt": "broken"})
        sink.write({"__key__": "textonly", "txt": "no image here"})
        sink.write({"__key__": "fine", "png": (base / "images" / names[1]).read_bytes()})
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])  # cut in the middle of shard 1
    shards.append(folder / "00002.tar")

    report = index_shards(tmp_path / "store", shards, tiny_encoder, IndexConfig(commit_every=4), progress=False)
    bad = dict(report.bad)
    assert set(bad) == {"00001", "00002/broken", "00002/textonly"}
    assert bad["00001"].startswith("truncated") and "no image" in bad["00002/textonly"]
    gallery = Gallery.open(tmp_path / "store")
    assert dict(gallery.bad_files()) == bad  # the store records what the run reported
    held = set(gallery.items())
    assert {f"00000/{n.rsplit('.', 1)[0]}" for n in names[:PER_SHARD]} <= held and "00002/fine" in held
    from_cut = [i for i in held if i.startswith("00001/")]
    assert 0 < len(from_cut) < PER_SHARD  # the samples before the cut are kept

    again = index_shards(tmp_path / "store", shards, tiny_encoder, IndexConfig(commit_every=4), progress=False)
    assert again.added == 0 and dict(again.bad) == {}  # finished (cut) shards skipped: nothing new to report
    assert dict(Gallery.open(tmp_path / "store").bad_files()) == bad


# ---- kill -9 in the middle of a shard, then re-run -------------------------------------------------------------
def index_command(pattern: str, store: Path) -> list[str]:
    return [sys.executable, "-m", "clipmath", "index", pattern, "--store", str(store), "--model", "tiny-random-clip",
            "--commit-every", "3", "--batch-size", "3", "--json"]  # fmt: skip


def test_kill_9_mid_shard_then_rerun_equals_an_uninterrupted_run_bit_for_bit(corpus, tmp_path):
    base, names, _ = corpus
    pattern = str(base / "shards" / "{00000..00002}.tar")
    clean = tmp_path / "clean"
    done = subprocess.run(index_command(pattern, clean), env=SRC_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == len(names)

    store = tmp_path / "killed"
    proc = subprocess.Popen(index_command(pattern, store), env=SRC_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None and committed_rows(store) < PER_SHARD + 3:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    seen = committed_rows(store)
    assert PER_SHARD < seen < len(names), f"killed after {seen} rows: not in the middle of a later shard"
    rerun = subprocess.run(index_command(pattern, store), env=SRC_ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["added"] == len(names) - seen

    a, b = Gallery.open(clean).snapshot(), Gallery.open(store).snapshot()
    assert a.ids == b.ids
    assert np.array_equal(np.asarray(a.vectors), np.asarray(b.vectors))
    assert Gallery.open(store).info().vector_rows == len(names)  # nothing encoded twice
