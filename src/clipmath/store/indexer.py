"""Index a folder of images into a :class:`~clipmath.store.gallery.Gallery`: incremental, resumable, crash-safe.

Files whose size and mtime are unchanged are skipped without reading them. A changed or new file is hashed
(SHA-256): same content as before → only its mtime is updated; content already stored under another name → its
vector is reused; otherwise it is decoded and encoded. Work is committed every ``commit_every`` files, so a killed
run loses at most one chunk and a re-run finishes the job.

Files that cannot be used are skipped, reported and recorded in the store (so the run's report and the store's
``bad_files`` agree): undecodable images, special files (named pipes, devices, sockets: never opened), dangling
symlinks, and symlinks that lead out of the indexed folder (unless ``follow_symlinks``). Any name the file system
allows is indexed, including names that are not valid UTF-8 (kept losslessly, see :mod:`clipmath.store.gallery`).

Videos in the folder are sampled into frame rows by :mod:`clipmath.store.video` (the local engine only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import StoreError
from clipmath.imageio import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    decode,
    special_file_kind,
)
from clipmath.options import check_fields, setting
from clipmath.paths import existing_folder
from clipmath.store.files import Candidate, drop_non_finite, hash_file
from clipmath.store.gallery import Gallery, ItemRecord
from clipmath.store.manifest import MANIFEST
from clipmath.store.photometa import backfill, with_photo_meta
from clipmath.store.video import index_videos, known_videos
from clipmath.store.videoframes import VIDEO_SUFFIXES, Sampling, is_video, split_frame_id

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder


@dataclass
class IndexConfig:
    batch_size: int = 32
    commit_every: int = 256
    max_pixels: int = MAX_PIXELS
    prune: bool = False
    decode_workers: int = 2
    #: Index files (and walk folders) that symlinks lead to outside the indexed folder; off: skip and report them.
    follow_symlinks: bool = False
    #: Vector precision of a new store ("float32" or "float16"); None keeps an existing store's (float32 if new).
    dtype: str | None = None
    #: Processes that decode and prepare new images for the encoder (None: all cores, or the encoder's --threads).
    workers: int | None = None
    video_every: float = setting(
        2.0, "Seconds between sampled video frames (plus one at each scene change).", minimum=0.1
    )
    scene_threshold: float = setting(
        0.08,
        "A video frame starts a new scene when the mean absolute difference (0-1) of its 32x32 grayscale thumbnail "
        "and the previous frame's is above this.",
        minimum=0,
        maximum=1,
    )
    max_frames: int = setting(500, "Most frames kept of one video (spread over all of it).", minimum=1)

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.video_every, self.scene_threshold, self.max_frames)


@dataclass
class IndexReport:
    """What one indexing run did. ``bad`` lists ``(id, reason)`` of every file that could not be used."""

    model: str
    scanned: int = 0
    added: int = 0
    unchanged: int = 0
    reused: int = 0
    pruned: int = 0
    missing: int = 0
    #: Items of an older store that gained their photo metadata (date taken, camera, GPS) in this run.
    migrated: int = 0
    #: Videos decoded in this run, and the frames they added (each a row).
    videos: int = 0
    frames: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0

    @property
    def skipped(self) -> int:
        """Files that could not be used; equals the store's ``bad_files`` count after a full run."""
        return len(self.bad)


@dataclass
class IndexPlan:
    """What a run must do: ``candidates`` to read, ids ``gone`` from the folder (a gone video's frames), the
    store's items before the run, and the new or changed ``videos`` to sample."""

    candidates: list[Candidate]
    gone: list[str]
    known: dict[str, tuple[str, int, int, int]]
    videos: list[Candidate] = field(default_factory=list)


def list_images(
    root: Path, exclude: Path | None = None, follow_symlinks: bool = False, suffixes: frozenset[str] = IMAGE_SUFFIXES
) -> list[str]:
    """Relative POSIX paths of image files (or files of other ``suffixes``) under ``root`` (sorted; hidden entries
    and ``exclude`` skipped).

    Symlinked folders are walked only with ``follow_symlinks`` (each real folder once, so a loop ends).
    """
    found = []
    exclude = exclude.resolve() if exclude else None
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=follow_symlinks):
        here = Path(folder)
        if follow_symlinks:
            info = here.stat()
            if (info.st_dev, info.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != exclude)
        for name in files:
            if Path(name).suffix.lower() in suffixes and not name.startswith("."):
                found.append((here / name).relative_to(root).as_posix())
    return sorted(found)


def index_model(store: str | Path, model: str | None) -> str | None:
    """The model to index into ``store`` with: ``model``, or, when none (or ``auto``) is named and the store exists,
    the model its vectors were made with (a store holds one model's vectors)."""
    if model in (None, "auto") and (Path(store) / MANIFEST).exists():
        return Gallery.open(store).model_id
    return model


def index_folder(
    store: str | Path,
    root: str | Path,
    encoder: Encoder,
    config: IndexConfig | None = None,
    files: Sequence[str] | None = None,
    progress: bool = True,
) -> IndexReport:
    """Bring the store at ``store`` up to date with the images under ``root`` (or just ``files``, relative ids)."""
    config = config or IndexConfig()
    root = existing_folder(root, error=StoreError)
    started = time.monotonic()
    report = IndexReport(model=encoder.info.label())
    with Gallery.open_for_writing(store, encoder.info, encoder.transform.key, root, config.dtype) as gallery:
        plan = plan_index(gallery, root, files, config, report)
        candidates = plan.candidates
        with (
            tqdm(total=len(candidates), desc="indexing", unit="img", disable=not progress) as bar,
            ThreadPoolExecutor(max(1, config.decode_workers)) as pool,
        ):
            for start in range(0, len(candidates), config.commit_every):
                chunk = candidates[start : start + config.commit_every]
                _index_chunk(gallery, encoder, chunk, plan.known, config, pool, report)
                bar.update(len(chunk))
        index_plan_videos(gallery, encoder, plan, config, report, progress)
        finish_index(gallery, plan, config, report)
    report.seconds = time.monotonic() - started
    return report


def index_plan_videos(
    gallery: Gallery, encoder: Encoder, plan: IndexPlan, config: IndexConfig, report: IndexReport, progress: bool
) -> None:
    """Sample and encode the plan's new or changed videos with ``encoder`` (one transaction per video)."""
    if not plan.videos:
        return
    with tqdm(total=len(plan.videos), desc="videos", unit="video", disable=not progress) as bar:
        done = index_videos(gallery, encoder, plan.videos, config.sampling, config.batch_size, bar.update)
    report.videos, report.frames, report.unchanged = done.videos, done.frames, report.unchanged + done.unchanged
    report.bad.extend(done.bad)


def plan_index(
    gallery: Gallery, root: Path, files: Sequence[str] | None, config: IndexConfig, report: IndexReport
) -> IndexPlan:
    """List the files (``files``, or all images under ``root``), commit the ones to skip as bad files, and say
    which must be read and which ids are gone; counts scanned, unchanged and skipped files in ``report``.

    Shared by every indexing engine (local and Ray), so they decide what needs work the same way."""
    media = VIDEO_SUFFIXES | IMAGE_SUFFIXES
    listed = list(files) if files is not None else list_images(root, gallery.path, config.follow_symlinks, media)
    ids, videos = [i for i in listed if not is_video(i)], [i for i in listed if is_video(i)]
    report.scanned = len(listed)
    known = gallery.items()
    candidates, skipped = _changed_files(root, ids, known, config.follow_symlinks, report)
    stored = known_videos(gallery)
    # a video missing frames (dropped by repair) looks changed: it is read again
    by_video = {v: (s.sha256, s.size if s.complete else -1, s.mtime_ns, -1) for v, s in stored.items()}
    changed_videos, skipped_videos = _changed_files(root, videos, by_video, config.follow_symlinks, report)
    skipped += skipped_videos
    if skipped:
        gallery.commit(bad=skipped)
    report.bad.extend((item[0], item[1]) for item in skipped)
    gone = []
    if files is None:
        gallery.forget_bad_files(keep=listed)  # files no longer in the folder are no longer skipped
        gone = sorted(i for i in set(known) - set(ids) if split_frame_id(i) is None)
        here = set(videos)
        gone += sorted(f for v, s in stored.items() if v not in here for f in s.frames)
    return IndexPlan(candidates, gone, known, changed_videos)


def finish_index(gallery: Gallery, plan: IndexPlan, config: IndexConfig, report: IndexReport) -> None:
    """Prune the gone ids (``config.prune``: forgotten, then their vector rows compacted away) or count them as
    missing, and record the store's item count."""
    if config.prune and plan.gone:
        report.pruned = gallery.remove(plan.gone)
        gallery.compact()
    else:
        report.missing = len(plan.gone)
    report.migrated = backfill(gallery)  # items of an older store gain their photo metadata
    report.total = gallery.info().count


def _changed_files(
    root: Path,
    ids: Iterable[str],
    known: dict[str, tuple[str, int, int, int]],
    follow_symlinks: bool,
    report: IndexReport,
) -> tuple[list[Candidate], list[tuple[str, str, int | None, int | None]]]:
    """New or changed files to read, and ``(id, reason, size, mtime_ns)`` of files to skip without opening them."""
    candidates, skipped = [], []
    real_root = root.resolve()
    for item_id in ids:
        path = root / item_id
        try:
            info = path.stat()
        except OSError as exc:
            skipped.append((item_id, f"cannot stat: {exc.strerror or exc}", None, None))
            continue
        reason = _skip_reason(path, info.st_mode, real_root, follow_symlinks)
        if reason is not None:
            skipped.append((item_id, reason, info.st_size, info.st_mtime_ns))
            continue
        stored = known.get(item_id)
        if stored is not None and stored[1] == info.st_size and stored[2] == info.st_mtime_ns:
            report.unchanged += 1
            continue
        candidates.append(Candidate(item_id, path, info.st_size, info.st_mtime_ns))
    return candidates, skipped


def _skip_reason(path: Path, mode: int, real_root: Path, follow_symlinks: bool) -> str | None:
    kind = special_file_kind(mode)
    if kind is not None:
        return f"not a regular file ({kind})"
    if not follow_symlinks and not path.resolve().is_relative_to(real_root):
        return "symlink that leads outside the indexed folder (not followed unless follow_symlinks is on)"
    return None


def _index_chunk(
    gallery: Gallery,
    encoder: Encoder,
    chunk: Sequence[Candidate],
    known: dict[str, tuple[str, int, int, int]],
    config: IndexConfig,
    pool: ThreadPoolExecutor,
    report: IndexReport,
) -> None:
    hashes = list(pool.map(hash_file, chunk))
    by_hash = gallery.rows_for_hashes(d for d in hashes if isinstance(d, str))  # this chunk's only
    touched, reused, to_decode, bad = [], [], [], []
    for candidate, digest in zip(chunk, hashes):
        if isinstance(digest, ImageDecodeError):
            bad.append((candidate.id, str(digest), candidate.size, candidate.mtime_ns))
            continue
        stored = known.get(candidate.id)
        if stored is not None and stored[0] == digest:
            touched.append((candidate.id, candidate.mtime_ns))
            report.unchanged += 1
        elif digest in by_hash:
            record = gallery.record_by_hash(digest)
            size = (record.width, record.height) if record else (None, None)
            reused.append(
                (ItemRecord(candidate.id, digest, candidate.size, candidate.mtime_ns, *size), by_hash[digest])
            )
            report.reused += 1
        else:
            to_decode.append((candidate, digest))
    if hasattr(encoder, "encode_files"):
        records, vectors = _encode_files(encoder, to_decode, config, bad)
    else:  # an encoder of decoded images only: decode here
        records, vectors = _encode_decoded(encoder, to_decode, config, pool, bad)
    records, vectors = drop_non_finite(records, vectors, gallery.dtype, bad)
    path_of = {candidate.id: candidate.path for candidate in chunk}
    records = [with_photo_meta(r, path_of[r.id]) for r in records]
    reused = [(with_photo_meta(r, path_of[r.id]), row) for r, row in reused]
    gallery.commit(records, vectors, reused, bad)
    if touched:
        gallery.touch(touched)
    report.added += len(records)
    report.bad.extend((b[0], b[1]) for b in bad)


def _encode_files(
    encoder: Encoder, to_decode: list[tuple[Candidate, str]], config: IndexConfig, bad: list
) -> tuple[list[ItemRecord], np.ndarray | None]:
    """Decode, prepare and encode new files in the encoder's worker processes while its model runs."""
    if not to_decode:
        return [], None
    encoded = encoder.encode_files(
        [candidate.path for candidate, _ in to_decode],
        batch_size=config.batch_size,
        workers=config.workers,
        max_pixels=config.max_pixels,
    )
    for index, reason in encoded.failed:
        candidate = to_decode[index][0]
        bad.append((candidate.id, reason, candidate.size, candidate.mtime_ns))
    records = []
    for index, (width, height) in zip(encoded.indices, encoded.sizes):
        candidate, digest = to_decode[index]
        records.append(ItemRecord(candidate.id, digest, candidate.size, candidate.mtime_ns, width, height))
    return records, (encoded.vectors if records else None)


def _encode_decoded(
    encoder: Encoder, to_decode: list[tuple[Candidate, str]], config: IndexConfig, pool: ThreadPoolExecutor, bad: list
) -> tuple[list[ItemRecord], np.ndarray | None]:
    decoded = list(pool.map(lambda item: _decode(item[0], config.max_pixels), to_decode))
    records, images = [], []
    for (candidate, digest), image in zip(to_decode, decoded):
        if isinstance(image, ImageDecodeError):
            bad.append((candidate.id, str(image), candidate.size, candidate.mtime_ns))
            continue
        records.append(ItemRecord(candidate.id, digest, candidate.size, candidate.mtime_ns, image.width, image.height))
        images.append(image.image)
    vectors = encoder.encode_images(images, batch_size=config.batch_size) if images else None
    return records, vectors


def _decode(candidate: Candidate, max_pixels: int) -> DecodedImage | ImageDecodeError:
    try:
        return decode(candidate.path, max_pixels=max_pixels)
    except FileNotFoundError:
        return ImageDecodeError("file disappeared during indexing")
    except ImageDecodeError as exc:
        return exc
