"""The model side of the server: one worker thread owns the encoder and runs queries in batches.

Request handlers never touch the encoder. They submit jobs (search, encode an upload, caption) and wait on a
future. The worker takes every job waiting in the queue (up to ``max_batch``), groups searches by method and runs
each group as one batched :meth:`Retriever.search` call, so concurrent requests share encoder forward passes and
are serialized safely.

Before each batch the worker asks the store whether anything was committed since it last looked
(:class:`~clipmath.store.watch.StoreWatcher`: SQLite's ``PRAGMA data_version``, one tiny query) and, if so,
refreshes the retriever. A store can therefore be re-indexed while serving: every answer comes from one committed
state.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from clipmath.compose import CompositionQuery, build_query, check_needs, method_spec
from clipmath.errors import ClipmathError
from clipmath.imageio import ImageDecodeError
from clipmath.retrieval import Retriever
from clipmath.search import SearchHit
from clipmath.serve.captioning import Captioner, CaptionSubject
from clipmath.serve.errors import RequestError
from clipmath.serve.images import contained_path, gallery_image
from clipmath.store import GallerySnapshot, StoreInfo
from clipmath.store.videoframes import frame_id, split_frame_id
from clipmath.store.watch import StoreWatcher

log = logging.getLogger(__name__)

#: Prefix that marks an uploaded image inside an expression: ``+upload:<id> -"a dog"``.
UPLOAD_PREFIX = "upload:"
#: Uploaded images are kept this small (for captioners); the embedding is computed from the full image.
KEPT_UPLOAD_SIDE = 512


@dataclass(frozen=True)
class ImageKey:
    """An image the client names: a gallery id, or the id of an earlier upload (exactly one)."""

    gallery_id: str | None = None
    upload_id: str | None = None

    @property
    def label(self) -> str:
        return self.gallery_id if self.gallery_id is not None else f"{UPLOAD_PREFIX}{self.upload_id}"


@dataclass
class SearchSpec:
    """One search as the client asked for it (method already inferred and validated): the job's payload.

    The query fields are the plain fields of :func:`clipmath.compose.build_query`; images are named by
    :class:`ImageKey` (the reference) or by string inside the expression (a gallery id or ``upload:<id>``).
    """

    method: str
    k: int
    reference: ImageKey | None = None
    text: str | None = None
    source: str | None = None
    target: str | None = None
    lam: float = 1.0
    expression: str | None = None


@dataclass
class SearchOutcome:
    hits: list[SearchHit]
    paths: list[Path]
    store_items: int
    #: milliseconds: ``queue`` (waiting for the worker), ``encode`` and ``search`` (the batch this query was in)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class UploadRecord:
    upload_id: str
    vector: np.ndarray
    image: Image.Image  # downscaled copy, for captioners
    width: int
    height: int


def upload_id_of(data: bytes) -> str:
    """Content-addressed id of an upload (the same file uploaded twice gets the same id)."""
    return hashlib.sha256(data).hexdigest()[:32]


class UploadCache:
    """Thread-safe LRU of uploads by id."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._items: OrderedDict[str, UploadRecord] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, upload_id: str) -> UploadRecord | None:
        with self._lock:
            record = self._items.get(upload_id)
            if record is not None:
                self._items.move_to_end(upload_id)
            return record

    def put(self, record: UploadRecord) -> None:
        with self._lock:
            self._items[record.upload_id] = record
            self._items.move_to_end(record.upload_id)
            while len(self._items) > self.slots:
                self._items.popitem(last=False)


@dataclass
class _Job:
    kind: str  # "search" | "encode" | "caption" | "difference" | "call"
    payload: Any
    future: Future
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _State:
    """The snapshot requests resolve ids against, with its id → row map (swapped atomically)."""

    snapshot: GallerySnapshot
    rows: dict[str, int]


class QueryEngine:
    """Owns the retriever; all model work runs on one worker thread, in batches. Start with :meth:`start`."""

    def __init__(
        self,
        retriever: Retriever,
        max_batch: int = 32,
        upload_slots: int = 128,
        captioner: Captioner | None = None,
        checkpoints: dict[str, str] | None = None,
    ) -> None:
        self.retriever = retriever
        self.checkpoints = dict(checkpoints or {})
        self.max_batch = max_batch
        self.captioner = captioner
        self.uploads = UploadCache(upload_slots)
        self.batches = 0
        self.jobs_done = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._watcher = StoreWatcher(retriever.gallery.path)
        self._refresh_lock = threading.Lock()
        self._state = self._make_state()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="clipmath-serve-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the queued jobs and stop the worker (:meth:`start` starts it again)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    # ---- submitting (any thread) ------------------------------------------------------------------
    def search(self, spec: SearchSpec) -> Future:
        return self._submit("search", spec)

    def encode_upload(self, data: bytes, image: Image.Image) -> Future:
        """Embed an uploaded image (already decoded); resolves to its :class:`UploadRecord`."""
        upload_id = upload_id_of(data)
        known = self.uploads.get(upload_id)
        if known is not None:
            future: Future = Future()
            future.set_result(known)
            return future
        return self._submit("encode", (upload_id, image))

    def caption(self, key: ImageKey) -> Future:
        return self._submit("caption", key)

    def call(self, action: Callable[[], Any]) -> Future:
        """Run ``action`` on the worker thread, with the state of its batch (model work other than batched
        searches: a photo-library page, a duplicates join). ``action`` must not refresh the engine itself."""
        return self._submit("call", action)

    def difference(self, before: ImageKey, after: ImageKey) -> Future:
        return self._submit("difference", (before, after))

    def _submit(self, kind: str, payload: Any) -> Future:
        if self._thread is None:
            raise RuntimeError("QueryEngine.start() was not called")
        future: Future = Future()
        self._queue.put(_Job(kind, payload, future))
        return future

    # ---- gallery state (any thread) ---------------------------------------------------------------
    @property
    def snapshot(self) -> GallerySnapshot:
        return self._state.snapshot

    def refresh_if_changed(self) -> bool:
        """Reload the retriever if the store committed something since the last check."""
        with self._refresh_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        if not self._watcher.changed():
            return False
        changed = self.retriever.refresh()
        self._state = self._make_state()
        if changed:
            log.info("store changed: now %d images", len(self._state.snapshot))
        return changed

    def store_info(self) -> StoreInfo:
        """The store's metadata, read under the refresh lock (the gallery's connection is not shared mid-read)."""
        with self._refresh_lock:
            self._refresh_locked()
            return self.retriever.gallery.info()

    def gallery_file(self, item_id: str) -> Path:
        """The file of gallery item ``item_id``: only ids of the committed state, only inside the image root. A video
        frame's id gives the video's path with the frame's ``#t=<seconds>`` kept in its name (not a file)."""
        state = self._state
        if item_id not in state.rows:
            self.refresh_if_changed()
            state = self._state
            if item_id not in state.rows:
                raise RequestError(404, f"no image '{item_id}' in this gallery")
        frame = split_frame_id(item_id)
        if frame is not None:
            video = contained_path(state.snapshot.root, frame[0])
            return video.with_name(frame_id(video.name, frame[1]))
        return contained_path(state.snapshot.root, item_id)

    def _make_state(self) -> _State:
        snapshot = self.retriever.snapshot
        return _State(snapshot, {item_id: row for row, item_id in enumerate(snapshot.ids)})

    # ---- worker -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Job]) -> None:
        """Run one batch. Whatever fails in one job fails that job alone: a group that raises is re-run one job
        at a time, so a malformed request never takes the innocent requests batched with it down."""
        self.batches += 1
        try:
            with self._refresh_lock:  # no reload between the check and the searches: one state per batch
                self._guard(batch, self._refresh_locked)
                searches: dict[str, list[_Job]] = {}
                for job in batch:
                    if job.kind == "search" and not job.future.done():
                        searches.setdefault(job.payload.method, []).append(job)
                for method, jobs in searches.items():
                    self._search_group(method, jobs)
                for job in batch:
                    if job.kind == "call" and not job.future.done():
                        self._guard([job], lambda j=job: j.future.set_result(j.payload()))
            encodes = [job for job in batch if job.kind == "encode"]
            if encodes:
                self._in_groups(encodes, self._encode_group)
            for job in batch:
                if job.kind in ("caption", "difference"):
                    self._guard([job], lambda j=job: self._run_caption(j))
        except BaseException as exc:  # noqa: BLE001 - a bug here must fail the waiting requests, never the worker
            log.exception("query batch failed")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("worker stopped"))
        finally:
            self.jobs_done += len(batch)

    def _guard(self, jobs: Sequence[_Job], action: Callable[[], object]) -> bool:
        """Run ``action``; on an exception, fail every job of ``jobs`` not yet answered with it. True if it ran."""
        try:
            action()
            return True
        except Exception as exc:  # noqa: BLE001 - delivered to the request, which maps it to a status
            if not isinstance(exc, ClipmathError):
                log.exception("query failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return False

    def _in_groups(self, jobs: list[_Job], run: Callable[[list[_Job]], None]) -> None:
        """``run(jobs)`` together; if that raises, again one job at a time so only the faulty job fails."""
        try:
            run(jobs)
        except Exception:  # noqa: BLE001 - found out below, job by job
            pending = [job for job in jobs if not job.future.done()]
            if len(jobs) == 1:
                self._guard(pending, lambda: run(pending))
                return
            for job in pending:
                self._guard([job], lambda j=job: run([j]))

    def _search_group(self, method: str, jobs: list[_Job]) -> None:
        prepared: list[tuple[_Job, CompositionQuery]] = []
        for job in jobs:
            try:
                prepared.append((job, self._query_for(job.payload)))
            except Exception as exc:  # noqa: BLE001 - this request's own fault (or a bug it alone hit)
                if not isinstance(exc, ClipmathError):
                    log.exception("query failed")
                job.future.set_exception(exc)
        if prepared:
            queries = dict((id(job), query) for job, query in prepared)
            self._in_groups(
                [job for job, _ in prepared],
                lambda group: self._search_prepared(method, [(job, queries[id(job)]) for job in group]),
            )

    def _search_prepared(self, method: str, prepared: list[tuple[_Job, CompositionQuery]]) -> None:
        k = max(job.payload.k for job, _ in prepared)
        snapshot = self.retriever.snapshot
        timings: dict[str, float] = {}
        started = time.perf_counter()
        results = self.retriever.search(
            [query for _, query in prepared], method=method, k=k, checkpoint=self.checkpoints.get(method),
            timings=timings,
        )  # fmt: skip
        for (job, _), hits in zip(prepared, results):
            hits = hits[: job.payload.k]
            waited = {"queue": (started - job.submitted) * 1000, "encode": timings["encode_ms"],
                      "search": timings["search_ms"]}  # fmt: skip
            outcome = SearchOutcome(hits, [snapshot.path_of(h.id) for h in hits], len(snapshot), waited)
            job.future.set_result(outcome)

    def _query_for(self, spec: SearchSpec) -> CompositionQuery:
        reference = None if spec.reference is None else self._vector_of(spec.reference)
        query = build_query(
            reference=reference,
            reference_id=spec.reference.gallery_id if spec.reference is not None else None,
            text=spec.text,
            source=spec.source,
            target=spec.target,
            lam=spec.lam,
            expression=spec.expression,
            resolve_image=self._resolve_operand,
        )
        check_needs(spec.method, method_spec(spec.method).needs, query)  # the core's rule and wording
        return query

    def _resolve_operand(self, name: str) -> tuple[np.ndarray, str | None]:
        """An expression's image operand: ``upload:<id>`` or a gallery id (excluded from the results)."""
        if name.startswith(UPLOAD_PREFIX):
            return self._vector_of(ImageKey(upload_id=name[len(UPLOAD_PREFIX) :])), None
        return self._vector_of(ImageKey(gallery_id=name)), name

    def _vector_of(self, key: ImageKey) -> np.ndarray:
        if key.upload_id is not None:
            return self._upload(key.upload_id).vector
        state = self._state
        row = state.rows.get(key.gallery_id or "")
        if row is None:
            raise RequestError(404, f"no image '{key.gallery_id}' in this gallery")
        return np.asarray(state.snapshot.vectors[row], dtype=np.float32)

    def _upload(self, upload_id: str) -> UploadRecord:
        record = self.uploads.get(upload_id)
        if record is None:
            raise RequestError(404, f"upload '{upload_id}' is unknown or expired: upload the image again")
        return record

    def _encode_group(self, jobs: list[_Job]) -> None:
        images = [job.payload[1] for job in jobs]
        vectors = self.retriever.encoder.encode_images(images, batch_size=len(images))
        for job, image, vector in zip(jobs, images, vectors):
            kept = image  # for captioners: a small copy, never a full-size one
            if max(image.size) > KEPT_UPLOAD_SIDE:
                kept = ImageOps.contain(image, (KEPT_UPLOAD_SIDE, KEPT_UPLOAD_SIDE))
            record = UploadRecord(job.payload[0], np.asarray(vector, dtype=np.float32), kept, *image.size)
            self.uploads.put(record)
            job.future.set_result(record)

    # ---- captions ---------------------------------------------------------------------------------
    def _run_caption(self, job: _Job) -> None:
        what = "captions" if job.kind == "caption" else "difference captions"
        if self.captioner is None:
            raise RequestError(501, f"{what} are not enabled on this server")
        try:
            if job.kind == "caption":
                job.future.set_result(self.captioner.caption([self._subject(job.payload)])[0])
            else:
                before, after = job.payload
                job.future.set_result(self.captioner.difference(self._subject(before), self._subject(after)))
        except NotImplementedError:
            raise RequestError(501, f"{what} are not enabled on this server") from None

    def _subject(self, key: ImageKey) -> CaptionSubject:
        if key.upload_id is not None:
            record = self._upload(key.upload_id)
            return CaptionSubject(record.vector, record.image, key.label)
        vector = self._vector_of(key)
        path = self.gallery_file(key.gallery_id or "")
        try:
            image = gallery_image(path)  # a gallery file (or a video's frame): the index's pixel limit
        except FileNotFoundError:
            raise RequestError(404, f"the file of '{key.gallery_id}' is gone from the store's folder") from None
        except ImageDecodeError as exc:
            raise RequestError(422, f"cannot read '{key.gallery_id}': {exc}") from None
        return CaptionSubject(vector, image, key.label)
