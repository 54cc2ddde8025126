"""Index webdataset tar shards (:mod:`clipmath.store.shards`) into a store: per shard incremental and crash-safe.

Each shard is read in order and committed every ``commit_every`` samples, counted from the shard's start (so a run
that resumes a half-done shard encodes exactly the batches an uninterrupted run would: the stores agree bit for bit).
A shard read to its end is recorded in the manifest's ``shards`` table with its size and mtime; a re-run skips it
without opening it while both are unchanged. A sample already stored with the same content is not encoded again.

A sample without an image, an image that does not decode, or a truncated tar (its samples before the cut are kept)
is skipped, reported and recorded in the store's bad files, like a bad file in a folder. Each item keeps its caption
(``.txt``) and metadata (``.json``) as the record's ``extra``.

The work is split so that any process can do the reading and encoding: :func:`embed_shard` reads one shard and
encodes what the store lacks (given the shard's stored ids and a way to ask which contents the store holds), and the
process holding the store commits its :class:`ChunkResult` s in order (:func:`commit_chunk`). The local engine does
both here; :mod:`clipmath.store.ray_shards` runs :func:`embed_shard` as one Ray task per shard.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from clipmath.store.gallery import Gallery
from clipmath.store.indexer import IndexConfig, IndexReport
from clipmath.store.manifest import py_id
from clipmath.store.records import ItemRecord
from clipmath.store.shards import Sample, ShardRead, read_shard, shard_name, shards_root

if TYPE_CHECKING:
    import sqlite3

    from clipmath.encoders.base import Encoder

SHARDS_TABLE = """
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, samples INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class ShardState:
    """A shard read to its end: its size and mtime then, and how many samples it held."""

    size: int
    mtime_ns: int
    samples: int


def finished_shards(conn: sqlite3.Connection) -> dict[str, ShardState]:
    """``name -> ShardState`` of every shard a run read to its end (empty for a store of a folder)."""
    conn.executescript(SHARDS_TABLE)
    return {row[0]: ShardState(*row[1:]) for row in conn.execute("SELECT name, size, mtime_ns, samples FROM shards")}


#: A sample's status in a :class:`ChunkResult`.
UNCHANGED, HELD, NEW, BAD = "unchanged", "held", "new", "bad"
#: ``id -> (sha256, mtime_ns)`` of a shard's items already in the store.
KnownItems = dict[str, tuple[str, int]]
#: Which of these SHA-256 digests the store holds.
HeldFlags = Callable[[list[str]], list[bool]]


@dataclass
class ChunkResult:
    """One chunk of a shard, read and (where new) encoded: per sample its id, status, digest, image size in bytes,
    extra (caption, metadata), reason (bad), width and height (new); ``vectors``: the NEW samples' rows, in order."""

    ids: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    digests: list[str | None] = field(default_factory=list)
    sizes: list[int | None] = field(default_factory=list)
    extras: list[dict | None] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    dims: list[tuple[int | None, int | None]] = field(default_factory=list)
    vectors: np.ndarray | None = None


@dataclass
class ShardResult:
    """A shard read to its end (or to where it broke: ``problem``): its chunks and sample count."""

    name: str
    size: int
    mtime_ns: int
    chunks: list[ChunkResult]
    samples: int = 0
    problem: str | None = None


def index_shards(
    store: str | Path,
    shards: Sequence[Path],
    encoder: Encoder,
    config: IndexConfig | None = None,
    progress: bool = True,
) -> IndexReport:
    """Bring the store at ``store`` up to date with the samples of ``shards`` (tar files; ids ``shard/key``)."""
    config = config or IndexConfig()
    root = shards_root(shards)
    started = time.monotonic()
    report = IndexReport(model=encoder.info.label())
    with Gallery.open_for_writing(store, encoder.info, encoder.transform.key, root, config.dtype) as gallery:
        names = [shard_name(shard, root) for shard in shards]

        def held(digests: list[str]) -> list[bool]:
            found = gallery.rows_for_hashes(digests)
            return [d in found for d in digests]

        with tqdm(total=len(shards), desc="indexing shards", unit="shard", disable=not progress) as bar:
            for shard, name, size, mtime in shards_to_read(gallery, shards, names, report):
                known, outcome = known_items(gallery, name), ShardRead()
                for chunk in _embed_chunks(shard, name, known, held, encoder, config, outcome):
                    commit_chunk(gallery, chunk, mtime, report)
                    report.scanned += len(chunk.ids)
                finish_shard(gallery, ShardResult(name, size, mtime, [], outcome.count, outcome.problem), report)
                bar.update(1)
            bar.update(len(shards) - bar.n)
        finish_shards(gallery, set(names), config, report)
    report.seconds = time.monotonic() - started
    return report


def shards_to_read(
    gallery: Gallery, shards: Sequence[Path], names: Sequence[str], report: IndexReport
) -> Iterator[tuple[Path, str, int, int]]:
    """``(shard, name, size, mtime_ns)`` of the shards that need reading; finished unchanged shards are counted in
    ``report`` (never opened), unreadable ones reported as bad."""
    done = finished_shards(gallery.manifest)
    for shard, name in zip(shards, names):
        try:
            info = shard.stat()
        except OSError as exc:
            reason = f"cannot read shard: {exc.strerror or exc}"
            gallery.commit(bad=[(name, reason, None, None)])
            report.bad.append((name, reason))
            continue
        finished = done.get(name)
        if finished is not None and (finished.size, finished.mtime_ns) == (info.st_size, info.st_mtime_ns):
            report.scanned += finished.samples
            report.unchanged += finished.samples
            continue
        yield shard, name, info.st_size, info.st_mtime_ns


def known_items(gallery: Gallery, name: str) -> KnownItems:
    """The stored items of shard ``name`` (a range of the id index: never the whole store)."""
    query = "SELECT id, sha256, mtime_ns FROM items WHERE id >= ? AND id < ?"
    rows = gallery.manifest.execute(query, (name + "/", name + "0")).fetchall()  # "0" follows "/"
    return {str(item_id): (digest, mtime) for item_id, digest, mtime in rows}


def embed_shard(
    shard: Path, name: str, mtime_ns: int, size: int, known: KnownItems, held: HeldFlags, encoder, config
) -> ShardResult:
    """Read one shard and encode the samples the store lacks (no store needed: ``known`` and ``held`` answer)."""
    outcome = ShardRead()
    chunks = list(_embed_chunks(shard, name, known, held, encoder, config, outcome))
    return ShardResult(name, size, mtime_ns, chunks, outcome.count, outcome.problem)


def _embed_chunks(
    shard: Path,
    name: str,
    known: KnownItems,
    held: HeldFlags,
    encoder: Encoder,
    config: IndexConfig,
    outcome: ShardRead,
) -> Iterator[ChunkResult]:
    samples = read_shard(shard, outcome)
    while chunk := list(islice(samples, config.commit_every)):
        outcome.count += len(chunk)
        yield _embed_chunk(name, chunk, known, held, encoder, config)


def _embed_chunk(
    name: str, chunk: list[Sample], known: KnownItems, held: HeldFlags, encoder: Encoder, config: IndexConfig
) -> ChunkResult:
    result = ChunkResult()
    to_ask = []
    for sample in chunk:
        item_id = f"{name}/{sample.key}"
        digest = hashlib.sha256(sample.image).hexdigest() if sample.image is not None else None
        result.ids.append(item_id)
        result.digests.append(digest)
        result.sizes.append(len(sample.image) if sample.image is not None else None)
        result.extras.append(sample.extra())
        result.dims.append((None, None))
        if digest is None:
            has = ", ".join(f".{ext}" for ext in sample.members) or "nothing"
            result.status.append(BAD)
            result.reasons.append(f"no image in the sample (it has {has})")
        elif known.get(item_id, ("",))[0] == digest:
            result.status.append(UNCHANGED)
            result.reasons.append("")
        else:
            result.status.append(NEW)
            result.reasons.append("")
            to_ask.append(len(result.ids) - 1)
    flags = held([result.digests[i] for i in to_ask]) if to_ask else []
    to_encode = []
    for i, is_held in zip(to_ask, flags):
        if is_held:
            result.status[i] = HELD
        else:
            to_encode.append(i)
    if to_encode:
        images = {s_digest: s.image for s, s_digest in zip(chunk, result.digests) if s_digest is not None}
        encoded = encoder.encode_files(
            [images[result.digests[i]] for i in to_encode],
            batch_size=config.batch_size,
            workers=config.workers,
            max_pixels=config.max_pixels,
        )
        for j, reason in encoded.failed:
            result.status[to_encode[j]], result.reasons[to_encode[j]] = BAD, reason
        for j, dims in zip(encoded.indices, encoded.sizes):
            result.dims[to_encode[j]] = dims
        result.vectors = encoded.vectors if encoded.indices else None
    return result


def commit_chunk(gallery: Gallery, result: ChunkResult, mtime_ns: int, report: IndexReport) -> None:
    """Commit one :class:`ChunkResult` atomically under the indexer's rules (unchanged: mtime updated; content the
    store holds: its vector row reused; new: appended; bad: recorded)."""
    by_hash = gallery.rows_for_hashes(d for d, st in zip(result.digests, result.status) if st == HELD)
    touched, reused, records, bad = [], [], [], []
    for i, item_id in enumerate(result.ids):
        status, digest, size = result.status[i], result.digests[i], result.sizes[i]
        if status == UNCHANGED:
            touched.append((item_id, mtime_ns))
            report.unchanged += 1
        elif status == HELD and digest in by_hash:
            same = gallery.record_by_hash(digest)
            dims = (same.width, same.height) if same else (None, None)
            record = ItemRecord(item_id, digest, size, mtime_ns, *dims, result.extras[i])
            reused.append((record, by_hash[digest]))
            report.reused += 1
        elif status == HELD:  # the content left the store since it was asked: retried by the next run
            bad.append((item_id, "content changed in the store during indexing; run again", None, None))
        elif status == NEW:
            records.append(ItemRecord(item_id, digest, size, mtime_ns, *result.dims[i], result.extras[i]))
        else:
            bad.append((item_id, result.reasons[i], size, mtime_ns))
    gallery.commit(records, result.vectors if records else None, reused, bad)
    if touched:
        gallery.touch(touched)
    report.added += len(records)
    report.bad.extend((b[0], b[1]) for b in bad)


def finish_shard(gallery: Gallery, result: ShardResult, report: IndexReport) -> None:
    """Record a shard read to its end (its truncation, if any, as a bad file under its name)."""
    bad = (result.name, result.problem, result.size, result.mtime_ns) if result.problem else None
    if bad:
        report.bad.append((result.name, result.problem))
    with gallery.manifest as conn:
        if bad:
            conn.execute("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?)", bad)
        else:
            conn.execute("DELETE FROM bad_files WHERE id = ?", (result.name,))
        shard_row = (result.name, result.size, result.mtime_ns, result.samples)
        conn.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", shard_row)


def finish_shards(gallery: Gallery, names: set[str], config: IndexConfig, report: IndexReport) -> None:
    """Ids of shards no longer named: pruned with ``config.prune``, else counted as missing."""
    cursor = gallery.manifest.execute("SELECT id FROM items")
    gone = [py_id(item_id) for (item_id,) in cursor if _shard_of(py_id(item_id), names) is None]
    if config.prune and gone:
        report.pruned = gallery.remove(gone)
        with gallery.manifest as conn:
            listed = {row[0] for row in conn.execute("SELECT name FROM shards")}
            conn.executemany("DELETE FROM shards WHERE name = ?", [(n,) for n in listed - names])
        gallery.compact()
    else:
        report.missing = len(gone)
    report.total = gallery.info().count


def _shard_of(item_id: str, names: set[str]) -> str | None:
    """The shard (one of ``names``) an id ``shard/key`` belongs to; None if none (keys may hold slashes too)."""
    cut = item_id.find("/")
    while cut != -1:
        if item_id[:cut] in names:
            return item_id[:cut]
        cut = item_id.find("/", cut + 1)
    return None
