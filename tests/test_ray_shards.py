"""Tar shards on a real local Ray cluster: one task per shard, results committed in shard order, equal to the local
engine (ids and vectors), finished shards skipped on a re-run. Skipped when Ray is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from clipmath.store import Gallery, IndexConfig
from clipmath.store.shard_indexer import index_shards
from tests.conftest import write_images
from tests.test_ray_engine import ray_cluster, tiny_factory  # noqa: F401 (the cluster fixture)
from tests.test_shards import write_shards

ray = pytest.importorskip("ray")
pytest.importorskip("webdataset")
pytestmark = pytest.mark.slow


def test_ray_over_shards_equals_the_local_engine(tmp_path, ray_cluster, tiny_encoder):  # noqa: F811
    from clipmath.store.ray_engine import RayOptions
    from clipmath.store.ray_shards import index_shards_with_ray

    names = write_images(tmp_path / "images", 20, seed=8, size=(20, 20))
    shards = write_shards(tmp_path / "shards", tmp_path / "images", names, per_shard=4)
    config = IndexConfig(batch_size=3, commit_every=3)
    local = index_shards(tmp_path / "local", shards, tiny_encoder, config, progress=False)
    report = index_shards_with_ray(tmp_path / "ray", shards[:3], tiny_factory(), config, RayOptions(workers=2),
                                   progress=False)  # fmt: skip
    assert report.added == 12
    report = index_shards_with_ray(tmp_path / "ray", shards, tiny_factory(), config, RayOptions(workers=2),
                                   progress=False)  # fmt: skip
    assert (report.added, report.unchanged, report.scanned) == (8, 12, 20)
    a, b = Gallery.open(tmp_path / "local").snapshot(), Gallery.open(tmp_path / "ray").snapshot()
    assert a.ids == b.ids and local.added == 20
    assert np.array_equal(np.asarray(a.vectors), np.asarray(b.vectors))  # same chunks, same batches: bit for bit
    assert Gallery.open(tmp_path / "ray").record(b.ids[0]).extra["caption"].startswith("a photo")
