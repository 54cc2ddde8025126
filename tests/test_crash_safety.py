"""A kill -9 at any point of indexing, followed by a re-run, yields the same gallery as one uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipmath.store import Gallery, IndexConfig, check, index_folder
from tests.conftest import write_images

COUNT = 160


def index_command(folder: Path, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clipmath.cli",
        "index",
        str(folder),
        "--store",
        str(store),
        "--model",
        "tiny-random-clip",
        "--commit-every",
        "4",
        "--batch-size",
        "4",
        "--json",
    ]


def committed_rows(store: Path) -> int:
    try:
        with sqlite3.connect(store / "manifest.sqlite", timeout=1) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'vector_rows'").fetchone()
            return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def run_and_kill(folder: Path, store: Path, kill_after_rows: int) -> int:
    """Start indexing, SIGKILL it once at least ``kill_after_rows`` rows are committed; returns rows seen."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    proc = subprocess.Popen(index_command(folder, store), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if committed_rows(store) >= kill_after_rows:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return committed_rows(store)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "images"
    write_images(path, COUNT, seed=11, size=(24, 24))
    return path


def index_in_process(folder: Path, store: Path, encoder) -> None:
    index_folder(store, folder, encoder, IndexConfig(commit_every=4, batch_size=4), progress=False)


@pytest.fixture(scope="module")
def clean_store(folder, tmp_path_factory, tiny_encoder) -> Path:
    store = tmp_path_factory.mktemp("clean") / "store"
    index_in_process(folder, store, tiny_encoder)
    return store


@pytest.mark.parametrize("kill_after_rows", [1, 60])
def test_kill_9_then_rerun_equals_clean_run(folder, clean_store, tmp_path, kill_after_rows, tiny_encoder):
    store = tmp_path / "store"
    seen = run_and_kill(folder, store, kill_after_rows)
    assert seen < COUNT, "the indexer finished before it could be killed; the test proves nothing"
    index_in_process(folder, store, tiny_encoder)  # the re-run

    clean, resumed = Gallery.open(clean_store).snapshot(), Gallery.open(store).snapshot()
    assert resumed.ids == clean.ids and len(set(resumed.ids)) == COUNT
    np.testing.assert_allclose(resumed.vectors, clean.vectors, atol=1e-5)
    info = Gallery.open(store).info()
    assert info.vector_rows == COUNT  # nothing encoded twice, no orphan rows
    vector_file = next(store.glob("vectors-*.f32"))
    assert vector_file.stat().st_size == COUNT * info.dim * 4
    verified = check(store)  # every committed chunk's checksum matches after the kill and the re-run
    assert verified.ok and verified.verified_rows == COUNT
