"""Index webdataset tar shards (:mod:`clipmath.store.shards`) into a store: per shard incremental and crash-safe.

Each shard is read in order and committed every ``commit_every`` samples, counted from the shard's start (so a run
that resumes a half-done shard encodes exactly the batches an uninterrupted run would: the stores agree bit for bit).
A shard read to its end is recorded in the manifest's ``shards`` table with its size and mtime; a re-run skips it
without opening it while both are unchanged. A sample already stored with the same content is not encoded again.

A sample without an image, an image that does not decode, or a truncated tar (its samples before the cut are kept)
is skipped, reported and recorded in the store's bad files, like a bad file in a folder. Each item keeps its caption
(``.txt``) and metadata (``.json``) as the record's ``extra``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from clipmath.store.gallery import Gallery
from clipmath.store.indexer import IndexConfig, IndexReport
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
        done = finished_shards(gallery.manifest)
        names = [shard_name(shard, root) for shard in shards]
        with tqdm(total=len(shards), desc="indexing shards", unit="shard", disable=not progress) as bar:
            for shard, name in zip(shards, names):
                _index_shard(gallery, encoder, shard, name, done.get(name), config, report)
                bar.update(1)
        _finish(gallery, set(names), config, report)
    report.seconds = time.monotonic() - started
    return report


def _index_shard(
    gallery: Gallery,
    encoder: Encoder,
    shard: Path,
    name: str,
    finished: ShardState | None,
    config: IndexConfig,
    report: IndexReport,
) -> None:
    try:
        info = shard.stat()
    except OSError as exc:
        reason = f"cannot read shard: {exc.strerror or exc}"
        gallery.commit(bad=[(name, reason, None, None)])
        report.bad.append((name, reason))
        return
    if finished is not None and (finished.size, finished.mtime_ns) == (info.st_size, info.st_mtime_ns):
        report.scanned += finished.samples
        report.unchanged += finished.samples
        return
    known = {k: v for k, v in gallery.items().items() if k.startswith(name + "/")}
    outcome = ShardRead()
    samples = read_shard(shard, outcome)
    count = 0
    for chunk in _chunks(samples, config.commit_every):
        count += len(chunk)
        _index_chunk(gallery, encoder, name, chunk, info.st_mtime_ns, known, config, report)
    report.scanned += count
    bad = [(name, outcome.problem, info.st_size, info.st_mtime_ns)] if outcome.problem else []
    if bad:
        report.bad.append((name, outcome.problem))
    with gallery.manifest as conn:
        if bad:
            conn.execute("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?)", bad[0])
        else:
            conn.execute("DELETE FROM bad_files WHERE id = ?", (name,))
        conn.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", (name, info.st_size, info.st_mtime_ns, count))


def _chunks(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    while chunk := list(islice(samples, size)):
        yield chunk


def _index_chunk(
    gallery: Gallery,
    encoder: Encoder,
    name: str,
    chunk: list[Sample],
    mtime_ns: int,
    known: dict[str, tuple[str, int, int, int]],
    config: IndexConfig,
    report: IndexReport,
) -> None:
    digests = [hashlib.sha256(s.image).hexdigest() if s.image is not None else None for s in chunk]
    by_hash = gallery.rows_for_hashes(d for d in digests if d is not None)
    touched, reused, to_encode, bad = [], [], [], []
    for sample, digest in zip(chunk, digests):
        item_id = f"{name}/{sample.key}"
        if digest is None:
            has = ", ".join(f".{ext}" for ext in sample.members) or "nothing"
            bad.append((item_id, f"no image in the sample (it has {has})", None, mtime_ns))
            continue
        record = ItemRecord(item_id, digest, len(sample.image), mtime_ns, extra=sample.extra())
        stored = known.get(item_id)
        if stored is not None and stored[0] == digest:
            report.unchanged += 1
            if stored[2] != mtime_ns:
                touched.append((item_id, mtime_ns))
        elif digest in by_hash:
            same = gallery.record_by_hash(digest)
            size = (same.width, same.height) if same else (None, None)
            reused.append((ItemRecord(item_id, digest, record.size, mtime_ns, *size, record.extra), by_hash[digest]))
            report.reused += 1
        else:
            to_encode.append(record)
    records, vectors = [], None
    if to_encode:
        by_digest = {s_digest: s.image for s, s_digest in zip(chunk, digests) if s_digest is not None}
        encoded = encoder.encode_files(
            [by_digest[r.sha256] for r in to_encode],
            batch_size=config.batch_size,
            workers=config.workers,
            max_pixels=config.max_pixels,
        )
        bad.extend((to_encode[i].id, reason, to_encode[i].size, mtime_ns) for i, reason in encoded.failed)
        for i, (width, height) in zip(encoded.indices, encoded.sizes):
            r = to_encode[i]
            records.append(ItemRecord(r.id, r.sha256, r.size, r.mtime_ns, width, height, r.extra))
        vectors = encoded.vectors if records else None
    gallery.commit(records, vectors, reused, bad)
    if touched:
        gallery.touch(touched)
    report.added += len(records)
    report.bad.extend((b[0], b[1]) for b in bad)


def _finish(gallery: Gallery, names: set[str], config: IndexConfig, report: IndexReport) -> None:
    """Ids of shards no longer named: pruned with ``config.prune``, else counted as missing."""
    gone = [item_id for item_id in gallery.items() if _shard_of(item_id, names) is None]
    if config.prune and gone:
        report.pruned = gallery.remove(gone)
        with gallery.manifest as conn:
            listed = {row[0] for row in conn.execute("SELECT name FROM shards")}
            conn.executemany("DELETE FROM shards WHERE name = ?", [(n,) for n in listed - names])
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
