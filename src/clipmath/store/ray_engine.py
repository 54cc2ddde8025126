"""Distributed indexing on Ray Data: files are read, hashed, decoded and embedded by a pool of actors (each loads the
model once; one GPU each where asked), and the driver commits the results into the store under the indexer's rules.

The driver decides what needs work exactly as :func:`clipmath.store.index_folder` does (unchanged size and mtime:
skipped without reading; special files and escaping symlinks: reported), then streams the changed files through
``ray.data``. An actor reads each file once: its SHA-256, and unless the store already holds that content, its
decoded pixels and embedding. Which contents the store holds is asked per batch of digests from one small actor on
the driver's node that reads the store's manifest (:class:`KnownContent`): no actor holds the store's hash set, so
an actor's memory does not grow with the store. The driver commits every ``commit_every`` results atomically: same
content as before -> mtime updated; content stored under another id -> its vector row reused; new content ->
appended; undecodable -> reported as a bad file. A driver killed at any point leaves the last commit; a re-run
finishes the job and gives the same ids and vectors as an uninterrupted run. Every node must see the image root
and the driver the store (a shared file system: see docs/scaling.md).

Ray is an optional extra: ``pip install 'clipmath[distributed]'``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import ClipmathError, StoreError
from clipmath.imageio import ImageDecodeError, open_regular_file
from clipmath.paths import existing_folder
from clipmath.store.files import NON_FINITE, finite_vector
from clipmath.store.gallery import Gallery, ItemRecord
from clipmath.store.indexer import IndexConfig, IndexReport, finish_index, index_plan_videos, plan_index

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

#: builds the encoder on each actor; it must pickle, e.g.
#: ``functools.partial(load_encoder, "openai/clip-vit-base-patch32")``
EncoderFactory = Callable[[], "Encoder"]


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` of a running cluster (None: start a local one), actors, GPUs per actor."""

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ClipmathError(f"'workers' must be a whole number of at least 1, not {self.workers!r}")
        for name in ("gpus_per_worker", "cpus_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ClipmathError(f"'{name}' must be a finite number of at least 0, not {value!r}")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise ClipmathError("each Ray worker needs a CPU or a GPU ('cpus_per_worker', 'gpus_per_worker')")

    def check_capacity(self, resources: dict[str, float]) -> None:
        """Refuse more actors than the cluster can ever run at once (Ray would wait for them forever)."""
        for name, per_worker, unit in (
            ("cpus_per_worker", self.cpus_per_worker, "CPU"),
            ("gpus_per_worker", self.gpus_per_worker, "GPU"),
        ):
            have = float(resources.get(unit, 0.0))
            if per_worker and self.workers * per_worker > have:
                fits = int(have // per_worker)
                raise ClipmathError(
                    f"'workers' = {self.workers} actors need {self.workers * per_worker:g} {unit}s ({per_worker:g} "
                    f"each, '{name}'); the Ray cluster has {have:g}: use at most {fits} workers"
                )


def model_factory(
    model: str | None, device: str, preprocessing: str | None, dtype: str, gpus_per_worker: float
) -> tuple[EncoderFactory, str]:
    """How each actor builds its encoder (a picklable call of ``load_encoder``), and the device it runs on: actors
    given GPUs run on ``cuda`` unless another device was asked for."""
    import functools

    from clipmath.encoders import load_encoder

    device = "cuda" if gpus_per_worker and device == "cpu" else device
    return functools.partial(load_encoder, model, device=device, preprocessing=preprocessing, dtype=dtype), device


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ClipmathError("the Ray engine needs Ray: pip install 'clipmath[distributed]'") from None
    return ray


def read_file_list(path: str | Path, root: str | Path) -> list[str]:
    """Ids (paths relative to ``root``) listed in a .txt (one per line), .csv or .parquet file (column ``path``,
    else the first column). Absolute entries must lie under ``root``."""
    path, root = Path(path), Path(root).resolve()
    if not path.is_file():
        raise ClipmathError(f"file list not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        column = "path" if "path" in table.column_names else table.column_names[0]
        entries = [str(v) for v in table.column(column).to_pylist()]
    elif suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        header = rows[0] if rows else []
        column = header.index("path") if "path" in header else 0
        entries = [row[column] for row in rows[1 if "path" in header else 0 :] if row]
    else:
        entries = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    ids = []
    for entry in entries:
        entry_path = Path(entry)
        if entry_path.is_absolute():
            try:
                entry = entry_path.resolve().relative_to(root).as_posix()
            except ValueError:
                raise ClipmathError(f"{entry} (in {path}) is not under the image folder {root}") from None
        ids.append(entry)
    return sorted(dict.fromkeys(ids))


class KnownContent:
    """A Ray actor on the driver's node: which of a batch of SHA-256 digests the store already holds.

    It answers from the store's manifest (indexed by content hash; a read-only connection that sees each commit of
    the driver), so its memory is SQLite's page cache, not the store's hash set."""

    def __init__(self, store: str) -> None:
        self.gallery = Gallery.open(store)

    def flags(self, digests: Sequence[str]) -> list[bool]:
        held = self.gallery.rows_for_hashes(digests)
        return [digest in held for digest in digests]


def start_known_content(ray, store: str | Path):
    """A :class:`KnownContent` actor pinned to this (the driver's) node, which sees the store; it takes no CPU."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(KnownContent).options(scheduling_strategy=here).remote(str(store))


#: which of these digests the store holds (:class:`AskKnownContent` through Ray; any function in tests)
KnownFlags = Callable[[list[str]], list[bool]]


@dataclass(frozen=True)
class AskKnownContent:
    """:data:`KnownFlags` that asks a :class:`KnownContent` actor, one round trip per batch (pickles as a handle)."""

    actor: object

    def __call__(self, digests: list[str]) -> list[bool]:
        import ray

        return ray.get(self.actor.flags.remote(digests))


class EmbedActor:
    """A Ray Data actor: loads the model once, then per batch of file rows returns hashes, sizes and embeddings.

    Content that ``known_flags`` says the store holds is not decoded or embedded (the driver reuses the stored
    vector); the actor keeps no set of the store's hashes."""

    def __init__(self, factory: EncoderFactory, known_flags: KnownFlags, max_pixels: int, batch_size: int):
        self.encoder = factory()
        self.known_flags = known_flags
        self.max_pixels = max_pixels
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["id"])
        digests, errors = [""] * count, [""] * count
        widths, heights = np.zeros(count, np.int64), np.zeros(count, np.int64)
        images, image_rows = [], []
        for i, path in enumerate(batch["path"]):
            try:
                with open_regular_file(Path(str(path))) as fh:
                    data = fh.read()
            except ImageDecodeError as exc:
                errors[i] = str(exc)
                continue
            except FileNotFoundError:
                errors[i] = "file disappeared during indexing"
                continue
            except OSError as exc:
                errors[i] = "permission denied" if isinstance(exc, PermissionError) else f"unreadable: {exc}"
                continue
            digests[i] = hashlib.sha256(data).hexdigest()
            images.append(data)
            image_rows.append(i)
        if images:  # known content is not embedded: the driver reuses the stored vector
            known = self.known_flags([digests[i] for i in image_rows])
            images = [data for data, is_known in zip(images, known) if not is_known]
            image_rows = [i for i, is_known in zip(image_rows, known) if not is_known]
        vectors = np.zeros((count, self.encoder.info.dim), np.float32)
        has_vector = np.zeros(count, bool)
        if images:
            # the encoder's own file pipeline (decode, draft, prepare) in this actor: the local indexer's path
            encoded = self.encoder.encode_files(
                images, batch_size=self.batch_size, workers=0, max_pixels=self.max_pixels
            )
            rows = np.asarray([image_rows[j] for j in encoded.indices], dtype=np.int64)
            if len(rows):
                vectors[rows] = encoded.vectors
                has_vector[rows] = True
                widths[rows] = [w for w, _ in encoded.sizes]
                heights[rows] = [h for _, h in encoded.sizes]
            for j, reason in encoded.failed:
                errors[image_rows[j]] = str(reason)
        return {
            "id": batch["id"],
            "size": batch["size"],
            "mtime_ns": batch["mtime_ns"],
            "sha256": np.array(digests, dtype=object),
            "error": np.array(errors, dtype=object),
            "width": widths,
            "height": heights,
            "has_vector": has_vector,
            "vector": vectors,
        }


def index_with_ray(
    store: str | Path,
    root: str | Path,
    factory: EncoderFactory,
    config: IndexConfig | None = None,
    files: Sequence[str] | None = None,
    options: RayOptions | None = None,
    encoder: Encoder | None = None,
    progress: bool = True,
) -> IndexReport:
    """Bring ``store`` up to date with the images under ``root`` (or ``files``) on a Ray cluster.

    ``encoder`` (optional) is a driver-side instance of the factory's model, used for its identity (model id,
    dimension, preprocessing) and to sample and encode the folder's videos (each one transaction, on the driver);
    without it the driver builds one with ``factory``.
    """
    ray = require_ray()
    config, options = config or IndexConfig(), options or RayOptions()
    root = existing_folder(root, error=StoreError)
    started = time.monotonic()
    encoder = encoder or factory()
    report = IndexReport(model=encoder.info.label())
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    options.check_capacity(ray.cluster_resources())
    with Gallery.open_for_writing(store, encoder.info, encoder.transform.key, root, config.dtype) as gallery:
        plan = plan_index(gallery, root, files, config, report)
        if plan.candidates:
            known_content = start_known_content(ray, store)
            dataset = _embedded_dataset(ray, plan.candidates, known_content, factory, config, options)
            with tqdm(total=len(plan.candidates), desc="indexing (ray)", unit="img", disable=not progress) as bar:
                for batch in dataset.iter_batches(batch_size=config.commit_every, batch_format="numpy"):
                    _commit_batch(gallery, batch, plan.known, report)
                    bar.update(len(batch["id"]))
        index_plan_videos(gallery, encoder, plan, config, report, progress)  # on the driver: one transaction each
        finish_index(gallery, plan, config, report)
    report.seconds = time.monotonic() - started
    return report


def _embedded_dataset(ray, candidates, known_content, factory, config: IndexConfig, options: RayOptions):
    rows = [{"id": c.id, "path": str(c.path), "size": c.size, "mtime_ns": c.mtime_ns} for c in candidates]
    blocks = max(1, min(len(rows), options.workers * 4))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    return dataset.map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "factory": factory,
            "known_flags": AskKnownContent(known_content),
            "max_pixels": config.max_pixels,
            "batch_size": config.batch_size,
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        concurrency=options.workers,
        num_gpus=options.gpus_per_worker,
        num_cpus=options.cpus_per_worker,
    )


def _commit_batch(gallery: Gallery, batch: dict[str, np.ndarray], known: dict, report: IndexReport) -> None:
    """Apply the indexer's rules to one batch of actor results and commit it atomically (the store is asked only
    about this batch's digests: the driver's work per batch does not grow with the store)."""
    by_hash = gallery.rows_for_hashes(str(d) for d in batch["sha256"] if d)
    next_row = int(gallery.meta["vector_rows"])
    records, vectors, reused, touched, bad = [], [], [], [], []
    pending: dict[str, tuple[int, int]] = {}  # content first seen in this batch -> its image size
    for i, item_id in enumerate(batch["id"].tolist()):
        size, mtime, digest = int(batch["size"][i]), int(batch["mtime_ns"][i]), str(batch["sha256"][i])
        if batch["error"][i]:
            bad.append((item_id, str(batch["error"][i]), size, mtime))
            continue
        stored = known.get(item_id)
        if stored is not None and stored[0] == digest:
            touched.append((item_id, mtime))
            report.unchanged += 1
        elif digest in by_hash:
            record = None if digest in pending else gallery.record_by_hash(digest)
            dims = pending.get(digest) or ((record.width, record.height) if record else (None, None))
            reused.append((ItemRecord(item_id, digest, size, mtime, *dims), by_hash[digest]))
            report.reused += 1
        elif batch["has_vector"][i] and not finite_vector(batch["vector"][i], gallery.dtype):
            bad.append((item_id, NON_FINITE, size, mtime))
        elif batch["has_vector"][i]:
            by_hash[digest] = next_row + len(records)
            pending[digest] = (int(batch["width"][i]), int(batch["height"][i]))
            records.append(ItemRecord(item_id, digest, size, mtime, *pending[digest]))
            vectors.append(batch["vector"][i])
        else:  # content the actor was told is stored, gone from the store since: retried by the next run
            bad.append((item_id, "content changed in the store during indexing; run again", None, None))
    gallery.commit(records, np.stack(vectors) if records else None, reused, bad)
    if touched:
        gallery.touch(touched)
    report.added += len(records)
    report.bad.extend((b[0], b[1]) for b in bad)
