"""Webdataset tar shards indexed on Ray: one task per shard on a pool of model actors, committed in shard order.

The driver plans with the shard list only (its memory does not grow with the number of samples): it skips finished
unchanged shards as the local engine does, then hands the others, one at a time and never more than the actors can
take, to a pool of :class:`ShardActor` s (each loads the model once). An actor reads its shard, asks the driver's
:class:`~clipmath.store.ray_engine.KnownContent` actor which contents the store holds, and encodes the rest with the
same chunks and batches as the local engine (:func:`~clipmath.store.shard_indexer.embed_shard`). Results come back
in shard order and the driver commits them under the local engine's rules, chunk by chunk, then marks the shard
finished: a driver killed at any point leaves the last commit, and a re-run skips finished shards and resumes the
half-done one. An actor lost mid-shard ends the run with Ray's error; the same command resumes it (actors are not
restarted in place: Ray warns that restarting actors whose arguments live in its object store is unsafe). Every node
must see the shards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from clipmath.store.gallery import Gallery
from clipmath.store.indexer import IndexConfig, IndexReport
from clipmath.store.ray_engine import AskKnownContent, EncoderFactory, RayOptions, require_ray, start_known_content
from clipmath.store.shard_indexer import (
    ShardResult,
    commit_chunk,
    embed_shard,
    finish_shard,
    finish_shards,
    known_items,
    shards_to_read,
)
from clipmath.store.shards import shard_name, shards_root


class ShardActor:
    """Loads the model once; embeds whole shards (:func:`embed_shard`) in this process."""

    def __init__(self, factory: EncoderFactory, held: AskKnownContent, config: IndexConfig) -> None:
        self.encoder = factory()
        self.held = held
        self.config = config

    def embed(self, shard: str, name: str, mtime_ns: int, size: int, known: dict) -> ShardResult:
        return embed_shard(Path(shard), name, mtime_ns, size, known, self.held, self.encoder, self.config)


def index_shards_with_ray(
    store: str | Path,
    shards: Sequence[Path],
    factory: EncoderFactory,
    config: IndexConfig | None = None,
    options: RayOptions | None = None,
    encoder=None,
    progress: bool = True,
) -> IndexReport:
    """Bring ``store`` up to date with the samples of ``shards`` on a Ray cluster (ids ``shard/key``, as locally).
    ``encoder``: a driver-side instance of the factory's model, for its identity only (built if not given)."""
    ray = require_ray()
    from ray.util import ActorPool

    config, options = config or IndexConfig(), options or RayOptions()
    root = shards_root(shards)
    started = time.monotonic()
    encoder = encoder or factory()
    report = IndexReport(model=encoder.info.label())
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    actor_config = IndexConfig(**{**config.__dict__, "workers": 0})  # decode in the actor's own process
    with Gallery.open_for_writing(store, encoder.info, encoder.transform.key, root, config.dtype) as gallery:
        names = [shard_name(shard, root) for shard in shards]
        todo = shards_to_read(gallery, shards, names, report)
        held = AskKnownContent(start_known_content(ray, store))
        remote = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker)(ShardActor)
        pool = ActorPool([remote.remote(factory, held, actor_config) for _ in range(options.workers)])

        def submit(actor, job):
            shard, name, size, mtime = job
            return actor.embed.remote(str(shard), name, mtime, size, known_items(gallery, name))

        with tqdm(total=len(shards), desc="indexing shards (ray)", unit="shard", disable=not progress) as bar:
            for result in pool.map(submit, todo):  # in shard order; at most one shard per actor in flight
                for chunk in result.chunks:
                    commit_chunk(gallery, chunk, result.mtime_ns, report)
                    report.scanned += len(chunk.ids)
                finish_shard(gallery, result, report)
                bar.update(1)
        finish_shards(gallery, set(names), config, report)
    report.seconds = time.monotonic() - started
    return report
