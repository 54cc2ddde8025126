"""Distributed indexing on a real local Ray cluster (2 workers, no dashboard): equal to the local indexer, a
driver killed with SIGKILL mid-run then re-run gives the same store, and actors embed only content the store does
not hold without holding its hash set. Skipped when Ray is not installed."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from clipmath.store import Gallery, IndexConfig, index_folder
from tests.conftest import GALLERY, REPO, write_images
from tests.test_scale_store import assert_same_store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs; its workers import this checkout's clipmath."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), previous]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def tiny_factory():
    from clipmath.encoders import load_encoder

    return functools.partial(load_encoder, "tiny-random-clip")


def test_ray_index_equals_the_local_indexer(tmp_path, ray_cluster, tiny_encoder):
    from clipmath.store.ray_engine import RayOptions, index_with_ray

    config = IndexConfig(batch_size=4, commit_every=8)
    report = index_with_ray(
        tmp_path / "ray.store", GALLERY, tiny_factory(), config, options=RayOptions(workers=2), progress=False
    )
    local = index_folder(tmp_path / "local.store", GALLERY, tiny_encoder, config, progress=False)
    assert report.total == local.total > 20 and report.added + report.reused == local.added + local.reused
    assert sorted(report.bad) == sorted(local.bad)
    assert_same_store(tmp_path / "ray.store", tmp_path / "local.store")
    again = index_with_ray(tmp_path / "ray.store", GALLERY, tiny_factory(), config, progress=False)
    assert again.added == 0 and again.unchanged == local.total


def test_cli_engine_ray_indexes_like_the_local_engine(tmp_path, ray_cluster, tiny_encoder):
    """``clipmath index --engine ray`` end to end: each actor builds the model the CLI names."""
    import json

    from typer.testing import CliRunner

    from clipmath.cli import app

    args = ["index", str(GALLERY), "--model", "tiny-random-clip", "--batch-size", "4", "--json"]
    result = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "ray.store"), "--engine", "ray",
                                      "--address", ray_cluster, "--workers", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    local = index_folder(tmp_path / "local.store", GALLERY, tiny_encoder, IndexConfig(batch_size=4), progress=False)
    assert json.loads(result.stdout)["total"] == local.total
    assert_same_store(tmp_path / "ray.store", tmp_path / "local.store")


def test_ray_engine_indexes_the_folders_videos_like_the_local_engine(tmp_path, ray_cluster, tiny_encoder):
    """Videos are sampled and encoded on the driver (one transaction each); their frames equal the local run's."""
    pytest.importorskip("av")
    from clipmath.store.ray_engine import RayOptions, index_with_ray
    from tests.test_video import CLIP, frame_times, write_clip

    folder = tmp_path / "media"
    write_images(folder, 3)
    write_clip(folder / CLIP)
    options = RayOptions(workers=1)
    report = index_with_ray(tmp_path / "ray.store", folder, tiny_factory(), options=options, encoder=tiny_encoder,
                            progress=False)  # fmt: skip
    local = index_folder(tmp_path / "local.store", folder, tiny_encoder, progress=False)
    assert (
        (report.videos, report.frames)
        == (local.videos, local.frames)
        == (1, len(frame_times(tmp_path / "local.store")))
    )
    assert frame_times(tmp_path / "ray.store") == frame_times(tmp_path / "local.store")
    assert_same_store(tmp_path / "ray.store", tmp_path / "local.store")


def test_actors_given_gpus_run_on_cuda_unless_another_device_is_named():
    from clipmath.store.ray_engine import model_factory

    factory, device = model_factory("tiny-random-clip", "cpu", None, "auto", 1.0)
    assert device == "cuda" and factory.keywords["device"] == "cuda" and factory.args == ("tiny-random-clip",)
    assert (
        model_factory("m", "cpu", None, "auto", 0)[1] == "cpu"
        and model_factory("m", "mps", None, "auto", 1)[1] == "mps"
    )


def test_driver_killed_mid_run_then_rerun_equals_a_clean_run(tmp_path, ray_cluster, tiny_encoder):
    from clipmath.store.ray_engine import RayOptions, index_with_ray

    store = tmp_path / "ray.store"
    driver = (  # each batch is slowed down, so that a quiet machine cannot finish before the kill
        "import time; from clipmath.encoders import load_encoder; from clipmath.store import IndexConfig\n"
        "from clipmath.store.ray_engine import RayOptions, index_with_ray\n"
        "def slow_encoder():\n"
        "    encoder = load_encoder('tiny-random-clip')\n"
        "    encode_files = encoder.encode_files\n"
        "    def slowly(*args, **kwargs):\n"
        "        time.sleep(0.5)\n"
        "        return encode_files(*args, **kwargs)\n"
        "    encoder.encode_files = slowly\n"
        "    return encoder\n"
        f"index_with_ray({str(store)!r}, {str(GALLERY)!r}, slow_encoder, "
        f"IndexConfig(batch_size=1, commit_every=1), options=RayOptions(address={ray_cluster!r}), progress=False)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", driver], env=os.environ.copy())
    committed = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and committed == 0:
        time.sleep(0.05)
        if (store / "manifest.sqlite").exists():
            try:
                with Gallery.open(store) as gallery:
                    committed = gallery.info().count
            except Exception:  # the store is being created
                committed = 0
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    total = len([p for p in GALLERY.rglob("*") if p.is_file()])
    assert 0 < committed < total, committed  # killed mid-run, after at least one commit
    index_with_ray(store, GALLERY, tiny_factory(), IndexConfig(batch_size=4), options=RayOptions(), progress=False)
    index_folder(tmp_path / "clean.store", GALLERY, tiny_encoder, IndexConfig(batch_size=4), progress=False)
    assert_same_store(store, tmp_path / "clean.store")


class CountingEncoder:
    """Builds tiny-random-clip whose ``encode_files`` appends the number of images it was given to ``log``."""

    def __init__(self, log):
        self.log = str(log)

    def __call__(self):
        from clipmath.encoders import load_encoder

        encoder = load_encoder("tiny-random-clip")
        encode_files = encoder.encode_files

        def counted(images, *args, **kwargs):
            with open(self.log, "a") as fh:
                fh.write(f"{len(images)}\n")
            return encode_files(images, *args, **kwargs)

        encoder.encode_files = counted
        return encoder


def embedded(log) -> int:
    return sum(int(line) for line in log.read_text().split()) if log.exists() else 0


def test_actors_embed_only_content_the_store_does_not_hold(tmp_path, ray_cluster, tiny_encoder):
    """Copies of stored images under new names are hashed but not embedded (the actors ask the driver's node, per
    batch, which digests the store holds); the store equals the local indexer's."""
    from clipmath.store.ray_engine import RayOptions, index_with_ray

    images = tmp_path / "images"
    names = write_images(images, 6)
    config = IndexConfig(batch_size=2, commit_every=4)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    index_with_ray(tmp_path / "ray.store", images, CountingEncoder(first_log), config, progress=False)
    assert embedded(first_log) == 6
    for name in names[:4]:
        shutil.copy(images / name, images / f"copy_{name}")
    write_images(images / "new", 1, seed=7)
    store, counting = tmp_path / "ray.store", CountingEncoder(second_log)
    report = index_with_ray(store, images, counting, config, options=RayOptions(workers=2), progress=False)
    assert (report.added, report.reused, report.unchanged) == (1, 4, 6)
    assert embedded(second_log) == 1  # only the new content was decoded and embedded
    index_folder(tmp_path / "local.store", images, tiny_encoder, config, progress=False)
    assert_same_store(tmp_path / "ray.store", tmp_path / "local.store")


def test_embed_actor_skips_content_the_flags_call_known(tmp_path):
    """Without Ray: the actor embeds exactly the rows whose digest the ``known_flags`` function does not know."""
    import hashlib

    import numpy as np

    from clipmath.store.ray_engine import EmbedActor

    names = write_images(tmp_path, 4)
    known = {hashlib.sha256((tmp_path / names[1]).read_bytes()).hexdigest()}
    asked = []

    def known_flags(digests):
        asked.append(list(digests))
        return [d in known for d in digests]

    log = tmp_path / "count.log"
    actor = EmbedActor(CountingEncoder(log), known_flags, max_pixels=10**7, batch_size=4)
    batch = {
        "id": np.array(names, dtype=object),
        "path": np.array([str(tmp_path / n) for n in names], dtype=object),
        "size": np.zeros(4, np.int64),
        "mtime_ns": np.zeros(4, np.int64),
    }
    out = actor(batch)
    assert len(asked) == 1 and len(asked[0]) == 4  # one question per batch
    assert out["has_vector"].tolist() == [True, False, True, True] and embedded(log) == 3
    assert out["sha256"][1] in known and not out["vector"][1].any()
