"""Merge shard stores into one: machines index parts of a collection separately, then their stores are combined.

Every shard must hold the same model's embeddings with the same preprocessing. The merged store's image root is the
common folder of the shards' roots and every id is re-rooted there (``a/x.jpg`` from a shard rooted at ``photos/a``),
so ids from different roots never collide and the result equals indexing that folder in one run. Content seen twice
(the same SHA-256, in one shard or across shards) gets one vector row shared by its ids, as the indexer does; an id
present in two shards with different content keeps the newer file (mtime). Each chunk is one atomic commit, so an
interrupted merge re-run finishes the job; merging into an existing store adds what it lacks. A new merged store
has the first shard's vector precision unless ``dtype`` says otherwise.

Every shard is checked first (:func:`clipmath.store.check`, every checksum): a damaged shard is refused, naming it,
so damage is never laundered into a store with fresh checksums. With ``verified_only`` only its items whose vectors
verify are merged, and the others are listed (``MergeReport.unverified``). A vector that is not finite is never
written: its item is recorded as a bad file of the merged store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import StoreError
from clipmath.store.check import check
from clipmath.store.gallery import Gallery
from clipmath.store.manifest import check_store_folder
from clipmath.store.records import ItemRecord

CHUNK = 4096


@dataclass
class MergeReport:
    """What a merge did: items added, vectors written, ids already present, ids replaced by a newer shard's file."""

    into: Path
    shards: int = 0
    added: int = 0
    vectors_written: int = 0
    shared_vectors: int = 0
    already_present: int = 0
    replaced: int = 0
    older_skipped: int = 0
    bad_files: int = 0
    total: int = 0
    seconds: float = 0.0
    root: str = ""
    conflicts: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # shard ids left out: their vectors did not verify
    non_finite: list[str] = field(default_factory=list)  # ids whose shard vector is NaN or infinite (bad files)


@dataclass(frozen=True)
class _StoreFacts:
    """The EncoderInfo fields a store records (enough to open the merged store for writing)."""

    model_id: str
    backend: str
    dim: int


def _check_same_space(shards: Sequence[Gallery]) -> None:
    first = shards[0]
    for other in shards[1:]:
        for key, what in (("model_id", "model"), ("preprocessing", "preprocessing"), ("dim", "dimension")):
            if other.meta[key] != first.meta[key]:
                raise StoreError(
                    f"cannot merge {other.path} into {first.path}'s space: {what} '{other.meta[key]}' differs from "
                    f"'{first.meta[key]}' (shards must share model and preprocessing)"
                )


def common_root(roots: Sequence[str]) -> str:
    """The deepest folder containing every root."""
    return os.path.commonpath([str(Path(r).resolve()) for r in roots])


def _rerooted(item_id: str, shard_root: str, root: str) -> str:
    prefix = Path(shard_root).relative_to(root).as_posix()
    return item_id if prefix in ("", ".") else str(PurePosixPath(prefix) / item_id)


def verify_shards(shards: Sequence[Gallery], verified_only: bool) -> list[set[str]]:
    """Check every shard; a damaged one is a one-line error unless ``verified_only`` (then: the ids to leave out)."""
    skipped = []
    for shard in shards:
        found = check(shard.path)
        if not found.ok and not verified_only:
            raise StoreError(
                f"shard {shard.path} is damaged ({found.problems[0]}): repair it first, or merge only its verified "
                "rows ('verified_only')"
            )
        skipped.append(set(found.bad_items))
    return skipped


def merge_stores(
    shards: Sequence[str | Path],
    into: str | Path,
    dtype: str | None = None,
    progress: bool = True,
    verified_only: bool = False,
) -> MergeReport:
    """Merge the stores at ``shards`` into ``into`` (created if missing); see the module docstring for the rules."""
    if not shards:
        raise StoreError("no shard stores to merge")
    started = time.monotonic()
    into = Path(into)
    check_store_folder(into)
    opened = []
    try:
        for path in shards:
            opened.append(Gallery.open(path))
        if any(Path(g.path).resolve() == into.resolve() for g in opened):
            raise StoreError(f"{into} is one of the shards: merge into a new or another store")
        _check_same_space(opened)
        skips = verify_shards(opened, verified_only)
        root = common_root([g.meta["root"] for g in opened])
        first = opened[0]
        facts = _StoreFacts(first.model_id, first.meta["backend"], first.dim)
        report = MergeReport(into=into, shards=len(opened), root=root)
        if dtype is None and not (into / "manifest.sqlite").exists():
            dtype = str(first.dtype)  # a new merged store keeps the shards' precision
        with Gallery.open_for_writing(into, facts, first.meta["preprocessing"], root, dtype) as out:  # type: ignore[arg-type]
            known = out.items()
            by_hash = out.rows_by_hash()
            for shard, skip in zip(opened, skips):
                _merge_one(shard, out, root, known, by_hash, report, progress, skip)
            report.total = out.info().count
    finally:
        for gallery in opened:
            gallery.close()
    report.seconds = time.monotonic() - started
    return report


def _merge_one(
    shard: Gallery,
    out: Gallery,
    root: str,
    known: dict[str, tuple[str, int, int, int]],
    by_hash: dict[str, int],
    report: MergeReport,
    progress: bool,
    skip: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    snapshot = shard.snapshot()
    non_finite: list[str] = []
    shard_root = str(Path(shard.meta["root"]).resolve())
    for start in tqdm(range(0, len(snapshot), CHUNK), desc=f"merging {shard.path.name}", disable=not progress):
        new_items: list[ItemRecord] = []
        new_rows: list[int] = []
        reused: list[tuple[ItemRecord, int]] = []
        next_row = int(out.meta["vector_rows"])
        finite = np.isfinite(np.asarray(snapshot.vectors[start : start + CHUNK])).all(axis=1)
        for item_id, usable in zip(snapshot.ids[start : start + CHUNK], finite.tolist()):
            if item_id in skip:
                report.unverified.append(_rerooted(item_id, shard_root, root))
                continue
            if not usable:
                non_finite.append(_rerooted(item_id, shard_root, root))
                continue
            record = shard.record(item_id)
            if record is None:  # removed from the shard since the snapshot
                continue
            record = replace(record, id=_rerooted(item_id, shard_root, root))
            present = known.get(record.id)
            if present is not None:
                if present[0] == record.sha256:
                    report.already_present += 1
                    continue
                if present[2] >= record.mtime_ns:
                    report.older_skipped += 1
                    report.conflicts.append(record.id)
                    continue
                report.replaced += 1
                report.conflicts.append(record.id)
            if record.sha256 in by_hash:
                reused.append((record, by_hash[record.sha256]))
                report.shared_vectors += 1
            else:
                by_hash[record.sha256] = next_row + len(new_items)
                new_items.append(record)
                new_rows.append(snapshot.row_of(item_id))  # type: ignore[arg-type]
            known[record.id] = (record.sha256, record.size, record.mtime_ns, by_hash[record.sha256])
            report.added += 1
        vectors = np.asarray(snapshot.vectors[np.asarray(new_rows, dtype=np.int64)]) if new_items else None
        out.commit(new_items, vectors, reused)
        report.vectors_written += len(new_items)
    bad = [
        (_rerooted(item_id, shard_root, root), reason, None, None)
        for item_id, reason in shard.bad_files()
        if _rerooted(item_id, shard_root, root) not in known
    ]
    bad += [(item_id, f"its vector in shard {shard.path} is not finite", None, None) for item_id in non_finite]
    report.non_finite += non_finite
    if bad:
        out.commit(bad=bad)
        report.bad_files += len(bad)
