"""Hostile options and damaged shards: every path option is checked before work starts, every numeric option is
bounded, a damaged shard is never merged silently; each is one ``error:`` line and exit status 2, no traceback."""

from __future__ import annotations

import math
import sqlite3
import sys

import pytest

from clipmath.cli import main
from clipmath.errors import ClipmathError, StoreError
from clipmath.store import Gallery, IndexConfig, check, index_folder
from clipmath.store.merge import merge_stores
from clipmath.store.ray_engine import RayOptions


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``clipmath ARGS`` in this process (as the console script runs it): exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["clipmath", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def one_error_line(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines and lines[-1].startswith("error:") and "Traceback" not in err, err
    assert all(word in lines[-1] for word in words), lines[-1]


def not_stores(tmp_path):
    """A file, and a folder of someone's own: neither may become a store."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a store")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    return a_file, other


@pytest.fixture
def shards(tmp_path, image_folder, tiny_encoder):
    """Two shard stores of six images each (commits of 3), the first with one damaged vector block."""
    names = sorted(p.name for p in image_folder.iterdir())
    paths = []
    for n, part in enumerate((names[:6], names[6:])):
        path = tmp_path / f"shard{n}"
        index_folder(path, image_folder, tiny_encoder, IndexConfig(commit_every=3), files=part, progress=False)
        paths.append(path)
    vector_file = next(paths[0].glob("vectors-*"))
    with open(vector_file, "r+b") as fh:
        fh.seek(vector_file.stat().st_size - 8)  # the second commit's block (rows 3..5)
        fh.write(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    return paths


def test_a_damaged_shard_is_refused_naming_it(shards, tmp_path, monkeypatch, capsys):
    assert not check(shards[0]).ok and check(shards[1]).ok
    with pytest.raises(StoreError, match="shard0 is damaged"):
        merge_stores(shards, tmp_path / "merged", progress=False)
    code, _, err = run_cli(monkeypatch, capsys, "merge", *map(str, shards), "--into", str(tmp_path / "m2"))
    one_error_line(code, err, "shard0", "damaged", "--verified-only")


def test_verified_only_merges_exactly_the_verified_rows(shards, tmp_path, monkeypatch, capsys):
    lost = sorted(check(shards[0]).bad_items)
    assert len(lost) == 3
    with Gallery.open(shards[0]) as shard:
        kept = [item for item in shard.snapshot().ids if item not in lost]
    code, out, err = run_cli(
        monkeypatch, capsys, "merge", *map(str, shards), "--into", str(tmp_path / "m"), "--verified-only", "--json"
    )
    assert code == 0, err
    import json

    report = json.loads(out)
    assert sorted(report["unverified"]) == lost and report["total"] == 9
    with Gallery.open(tmp_path / "m") as merged:
        ids = set(merged.snapshot().ids)
    assert set(kept) <= ids and not set(lost) & ids and check(tmp_path / "m").ok


def test_store_paths_are_checked_before_the_model_loads(tmp_path, image_folder, monkeypatch, capsys):
    a_file, other = not_stores(tmp_path)
    cases = [(a_file, "is a file"), (other, "not a clipmath store"), ("/proc/self", "not a clipmath store")]
    cases.append(("/sys/clipmath-test.store", "cannot create"))  # sysfs: not even root may create a folder
    for store, words in cases:
        code, _, err = run_cli(monkeypatch, capsys, "index", str(image_folder), "--store", str(store),
                               "--model", "tiny-random-clip")  # fmt: skip
        one_error_line(code, err, words)
        assert "model:" not in err  # refused before the model loaded
    assert (other / "notes.txt").read_text() == "mine" and sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_merge_into_a_file_or_a_foreign_folder_is_refused(shards, tmp_path, monkeypatch, capsys):
    a_file, other = not_stores(tmp_path)
    for into, words in ((a_file, "is a file"), (other, "not a clipmath store")):
        code, _, err = run_cli(monkeypatch, capsys, "merge", str(shards[1]), "--into", str(into))
        one_error_line(code, err, words)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_an_index_faiss_cannot_build_is_one_line(tmp_path, image_folder, tiny_encoder, monkeypatch, capsys):
    pytest.importorskip("faiss")
    store = tmp_path / "store"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    code, _, err = run_cli(
        monkeypatch, capsys, "search", "-s", str(store), "--text", "a cat", "--index", "IVF99999999,Flat"
    )
    one_error_line(code, err, "IVF99999999,Flat", "clusters")


def test_ray_workers_are_bounded_by_the_cluster():
    with pytest.raises(ClipmathError, match="use at most 2 workers"):
        RayOptions(workers=1_000_000_000).check_capacity({"CPU": 2.0})
    with pytest.raises(ClipmathError, match="GPU"):
        RayOptions(workers=2, gpus_per_worker=1).check_capacity({"CPU": 16.0, "GPU": 1.0})
    RayOptions(workers=2).check_capacity({"CPU": 2.0})
    for bad in ({"workers": 0}, {"gpus_per_worker": math.nan}, {"cpus_per_worker": -1}, {"workers": True}):
        with pytest.raises(ClipmathError):
            RayOptions(**bad)


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf, 1e30])
def test_difference_weights_are_bounded_like_lam(weight):
    from clipmath.caption.difference import zero_shot_difference
    from clipmath.cli.output import error_line
    from clipmath.errors import ComposeError

    for weights, flag in (((weight, 1.0), "--before-weight"), ((1.0, weight), "--after-weight")):
        with pytest.raises(ComposeError) as info:  # checked before any image or model is touched
            zero_shot_difference("before.png", "after.png", None, None, weights=weights)
        assert flag in error_line(info.value)


def test_check_trusts_the_metadata_about_checksums(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "store"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    with sqlite3.connect(store / "manifest.sqlite") as conn:
        conn.execute("DROP TABLE chunks")
    report = check(store)
    assert not report.ok and "checksum table is missing" in report.problems[0]
    assert report.damaged_rows == 12 and report.verified_rows == 0
