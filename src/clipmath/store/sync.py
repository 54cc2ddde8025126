"""Sync a store into a Milvus collection: ``clipmath sync STORE --to milvus:URI``.

The collection converges to the store's committed content (ids, vectors, metadata): items added or changed are
upserted by id, items gone are deleted. Idempotent and crash-safe:

* the store records, per target, the state it last finished syncing and the ``id -> sha256`` set it sent
  (``milvus-sync.sqlite`` in the store folder, never the manifest);
* the collection records the same state in a property, cleared *before* it is changed and set again only after the
  changes are flushed;
* when the two agree, a run sends only the difference between the store and the recorded set; when they do not
  (a run was killed, the collection was touched, the ledger is gone) the run reads the collection's ids and content
  hashes and sends what differs. Upserts by id never duplicate an item, deletes of absent ids are no-ops, so a run
  killed at any point and run again ends with the collection equal to the store.

The collection also records the store's identity (model, preprocessing, dimension, which store) and a store of
another model, or another store, is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import StoreError
from clipmath.search.milvus import (
    IDENTITY_KEY,
    IN_PROGRESS,
    SEARCH_KEY,
    SYNCED_KEY,
    MilvusError,
    MilvusIndex,
    MilvusTarget,
    built_with,
    call,
    check_identity,
    connect,
    describe_index,
    properties,
    set_property,
    settle,
)
from clipmath.search.params import IndexParams, ivf_lists, pq_layout
from clipmath.store.gallery import Gallery
from clipmath.store.manifest import MANIFEST, db_id, py_id
from clipmath.store.manifest import connect as connect_manifest
from clipmath.store.records import GallerySnapshot

LEDGER = "milvus-sync.sqlite"
SYNC_LOCK = "milvus-sync.lock"
#: the default index type of a new collection
DEFAULT_INDEX_TYPE = "HNSW"
#: the longest id, path or caption a collection holds (bytes)
STRING_MAX = 4096
_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (target TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS synced (target TEXT NOT NULL, id TEXT NOT NULL, sha256 TEXT NOT NULL,
                                   PRIMARY KEY (target, id)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class SyncConfig:
    """``index_type``: the collection's vector index (None keeps an existing one, else :data:`DEFAULT_INDEX_TYPE`).
    ``params``: its sizes (``nlist``, ``hnsw_m``...) and, with ``params.recall``, the recall its query knob is tuned
    to (recorded in the collection, used by every searcher). ``batch``: rows per upsert."""

    index_type: str | None = None
    params: IndexParams = IndexParams()
    batch: int = 2000


@dataclass
class SyncReport:
    target: str
    store: str
    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    total: int = 0
    skipped: int = 0  # ids Milvus cannot hold (not valid UTF-8)
    reconciled: bool = False  # read the collection's content (first run, or after an interrupted one)
    index_type: str = ""
    index_params: dict = field(default_factory=dict)
    query: dict = field(default_factory=dict)
    tuning: dict | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the store side: the ledger ---------------------------------------------------------------------------------
class SyncLedger:
    """What the store last sent to each target (``milvus-sync.sqlite`` in the store folder)."""

    def __init__(self, store: Path) -> None:
        self.conn = sqlite3.connect(store / LEDGER, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_LEDGER_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def state(self, target: str) -> str | None:
        row = self.conn.execute("SELECT state FROM targets WHERE target = ?", (target,)).fetchone()
        return row[0] if row else None

    def synced(self, target: str) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, sha256 FROM synced WHERE target = ?", (target,)))

    def record(self, target: str, state: str, upserted: dict[str, str], deleted: Sequence[str], full: bool) -> None:
        """After a finished sync: the new state and set (``full``: replace the set, else apply the changes)."""
        with self._transaction():
            if full:
                self.conn.execute("DELETE FROM synced WHERE target = ?", (target,))
            else:
                self.conn.executemany("DELETE FROM synced WHERE target = ? AND id = ?", [(target, i) for i in deleted])
            self.conn.executemany(
                "INSERT OR REPLACE INTO synced VALUES (?, ?, ?)", [(target, i, s) for i, s in upserted.items()]
            )
            self.conn.execute("INSERT OR REPLACE INTO targets VALUES (?, ?)", (target, state))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


@contextmanager
def _sync_lock(store: Path) -> Iterator[None]:
    fd = os.open(store / SYNC_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{store} is being synced by another clipmath process") from None
        yield
    finally:
        os.close(fd)


# ---- reading the store --------------------------------------------------------------------------------------------
def _store_state(gallery: Gallery) -> tuple[GallerySnapshot, dict[str, str]]:
    """A committed snapshot and each of its ids' content hash, read consistently (retried if a writer commits
    between the two reads)."""
    for _ in range(5):
        snapshot = gallery.snapshot()
        hashes = {item_id: entry[0] for item_id, entry in gallery.items().items()}
        if len(hashes) == len(snapshot.ids) and all(i in hashes for i in snapshot.ids):
            return snapshot, hashes
    raise StoreError(f"{gallery.path} keeps changing under the sync; try again")


def identity_of(gallery: Gallery) -> dict[str, Any]:
    """What a collection records about the store it holds."""
    meta = gallery.meta
    return {
        "model_id": gallery.model_id,
        "preprocessing": meta["preprocessing"],
        "dim": gallery.dim,
        "dtype": str(gallery.dtype),
        "store": f"{meta['root']} (created {meta.get('created', '?')})",
    }


def _records(store: Path, ids: Sequence[str]) -> dict[str, tuple]:
    """``id -> (mtime_ns, width, height, extra)`` for ``ids`` (a read-only look-up in the manifest)."""
    conn = connect_manifest(store / MANIFEST)
    try:
        out: dict[str, tuple] = {}
        for start in range(0, len(ids), 500):
            part = [db_id(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(part))
            query = f"SELECT id, mtime_ns, width, height, extra FROM items WHERE id IN ({marks})"
            for row in conn.execute(query, part):
                out[py_id(row[0])] = (row[1], row[2], row[3], json.loads(row[4]) if row[4] else {})
        return out
    finally:
        conn.close()


def _row(item_id: str, sha: str, vector: np.ndarray, record: tuple, root: Path, dtype: str) -> dict[str, Any]:
    mtime_ns, width, height, extra = record
    caption = extra.get("caption") or extra.get("text") or ""
    folder = PurePosixPath(item_id).parent.as_posix()
    return {
        "id": item_id,
        "vector": vector.astype(np.float16 if dtype == "float16" else np.float32),
        "sha256": sha,
        "path": (root / item_id).as_posix()[:STRING_MAX],
        "folder": "" if folder == "." else folder,
        "mtime": int(mtime_ns // 1_000_000_000),
        "width": int(width or 0),
        "height": int(height or 0),
        "caption": str(caption)[:STRING_MAX],
        "meta": extra,
    }


def _utf8(item_id: str) -> bool:
    try:
        return len(item_id.encode("utf-8")) <= STRING_MAX
    except UnicodeEncodeError:
        return False


# ---- the collection side ------------------------------------------------------------------------------------------
def collection_schema(dim: int, dtype: str, lite: bool) -> Any:
    """``id`` (the store's item id), ``vector`` and :data:`clipmath.search.milvus.FIELDS`. Float16 stores keep
    float16 on a server; Milvus Lite holds float32 only."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=STRING_MAX)
    vector_type = DataType.FLOAT16_VECTOR if dtype == "float16" and not lite else DataType.FLOAT_VECTOR
    schema.add_field("vector", vector_type, dim=dim)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    for name in ("path", "folder"):
        schema.add_field(name, DataType.VARCHAR, max_length=STRING_MAX)
    schema.add_field("mtime", DataType.INT64)
    schema.add_field("width", DataType.INT32)
    schema.add_field("height", DataType.INT32)
    schema.add_field("caption", DataType.VARCHAR, max_length=STRING_MAX)
    schema.add_field("meta", DataType.JSON)
    return schema


def add_vector_index(target: MilvusTarget, client: Any, index_type: str, build: dict[str, Any]) -> None:
    """Create the ``vector`` field's index. pymilvus sends ``build`` as separate keys, which a server reads but
    Milvus Lite (3.2) ignores for its own defaults (nlist 128...); it reads them as one JSON ``params`` value."""
    index_params = client.prepare_index_params()
    options = {"params": {"params": build}} if target.lite and build else {"params": build}
    index_params.add_index("vector", index_type=index_type, metric_type="IP", **options)
    call(target, "create the index", client.create_index, target.collection, index_params)


def index_build_params(index_type: str, n: int, dim: int, params: IndexParams) -> dict[str, Any]:
    """Milvus build parameters for ``index_type``, sized like clipmath's FAISS kinds (:mod:`clipmath.search.params`)."""
    if index_type.startswith("IVF"):
        build: dict[str, Any] = {"nlist": min(65536, ivf_lists(n, params))}
        if index_type == "IVF_PQ":
            pq_m, pq_bits = pq_layout(n, dim, params)
            build.update(m=pq_m, nbits=pq_bits)
        return build
    if index_type.startswith("HNSW"):
        return {"M": params.hnsw_m, "efConstruction": params.ef_construction}
    return {}


def _ensure_collection(target: MilvusTarget, client: Any, identity: dict[str, Any]) -> dict[str, str]:
    """Create the collection (recording ``identity``) or check the existing one holds this store; its properties."""
    exists = call(target, "look up the collection", client.has_collection, target.collection)
    if not exists:
        schema = collection_schema(int(identity["dim"]), identity["dtype"], target.lite)
        props = {IDENTITY_KEY: json.dumps(identity), SYNCED_KEY: IN_PROGRESS}
        call(target, "create the collection", client.create_collection, target.collection, schema=schema)
        for key, value in props.items():
            set_property(target, client, key, value)
    props = properties(target, client)
    check_identity(target, props, identity)
    recorded = json.loads(props[IDENTITY_KEY])
    if recorded.get("store") != identity["store"]:
        raise MilvusError(
            f"{target.where()} holds the gallery of another store ({recorded.get('store')}): use another collection"
        )
    return props


def _collection_content(target: MilvusTarget, client: Any) -> dict[str, str]:
    """``id -> sha256`` of everything in the collection."""
    iterator = call(
        target,
        "read the collection",
        client.query_iterator,
        target.collection,
        batch_size=4000,
        filter="",
        output_fields=["id", "sha256"],
    )
    found: dict[str, str] = {}
    try:
        while True:
            batch = call(target, "read the collection", iterator.next)
            if not batch:
                break
            found.update((row["id"], row["sha256"]) for row in batch)
    finally:
        iterator.close()
    return found


def _ensure_index(
    target: MilvusTarget, client: Any, config: SyncConfig, n: int, dim: int
) -> tuple[str, dict[str, Any]]:
    """Create the vector index (or replace it by the type asked for), then load the collection."""
    current = describe_index(target, client)
    wanted = (config.index_type or current.get("index_type") or DEFAULT_INDEX_TYPE).upper()
    if wanted not in target.index_types():
        engine = "Milvus Lite" if target.lite else "this Milvus"
        raise MilvusError(
            f"{engine} has no {wanted} index (it has {', '.join(target.index_types())})"
            + ("; IVF_PQ and DISKANN need a Milvus server" if target.lite else "")
        )
    build = built_with(current)
    # built again: an index of another type, or one without clipmath's sizes (Milvus Lite used its defaults)
    unsized = not build and bool(index_build_params(wanted, n, dim, config.params))
    if not current or current.get("index_type") != wanted or unsized:
        if current:
            call(target, "release the collection", client.release_collection, target.collection)
            call(target, "drop the old index", client.drop_index, target.collection, "vector")
        build = index_build_params(wanted, n, dim, config.params)
        add_vector_index(target, client, wanted, build)
    call(target, "load the collection", client.load_collection, target.collection)
    return wanted, build


def sync_store(store: str | Path, target: MilvusTarget, config: SyncConfig | None = None, progress: bool = True):
    """Make ``target``'s collection hold exactly the store's committed items; returns a :class:`SyncReport`."""
    config = config or SyncConfig()
    store = Path(store)
    start = time.perf_counter()
    gallery = Gallery.open(store)
    try:
        with _sync_lock(store):
            report = _sync(gallery, target, config, progress)
    finally:
        gallery.close()
    report.seconds = time.perf_counter() - start
    return report


def _sync(gallery: Gallery, target: MilvusTarget, config: SyncConfig, progress: bool) -> SyncReport:
    store = gallery.path
    snapshot, hashes = _store_state(gallery)
    identity = identity_of(gallery)
    client = connect(target)
    props = _ensure_collection(target, client, identity)
    key = target.where()
    report = SyncReport(target=key, store=str(store))
    # the index first (a server loads, and so reads, only an indexed collection); sized by the store's count
    report.index_type, report.index_params = _ensure_index(target, client, config, len(hashes), gallery.dim)
    ledger = SyncLedger(store)
    try:
        marker = props.get(SYNCED_KEY, IN_PROGRESS)
        fast = marker != IN_PROGRESS and marker == ledger.state(key)
        present = ledger.synced(key) if fast else _collection_content(target, client)
        report.reconciled = not fast
        desired = {i: s for i, s in hashes.items() if _utf8(i)}
        report.skipped = len(hashes) - len(desired)
        upserts = [i for i in snapshot.ids if i in desired and present.get(i) != desired[i]]
        deletes = [i for i in present if i not in desired]
        report.upserted, report.deleted = len(upserts), len(deletes)
        report.unchanged, report.total = len(desired) - len(upserts), len(desired)
        if upserts or deletes or marker != snapshot.state:
            if marker != IN_PROGRESS:
                set_property(target, client, SYNCED_KEY, IN_PROGRESS)  # changing: a crash from here on reconciles
            _apply(target, client, gallery, snapshot, desired, upserts, deletes, identity["dtype"], config, progress)
            call(target, "flush", client.flush, target.collection)
            client = settle(target, client)  # searched through the index from here on (tuning measures it)
        if marker != snapshot.state or upserts or deletes:
            set_property(target, client, SYNCED_KEY, snapshot.state)
        sent = desired if not fast else {i: desired[i] for i in upserts}
        ledger.record(key, snapshot.state, sent, deletes, full=not fast)
    finally:
        ledger.close()
    _record_search(target, client, snapshot, identity, config, report)
    return report


def _apply(
    target: MilvusTarget,
    client: Any,
    gallery: Gallery,
    snapshot: GallerySnapshot,
    desired: dict[str, str],
    upserts: list[str],
    deletes: list[str],
    dtype: str,
    config: SyncConfig,
    progress: bool,
) -> None:
    for start in range(0, len(deletes), 1000):
        part = deletes[start : start + 1000]
        expr = "id in [" + ",".join(json.dumps(i) for i in part) + "]"
        call(target, "delete", client.delete, target.collection, filter=expr)
    root = snapshot.root
    bar = tqdm(total=len(upserts), desc=f"syncing to {target.collection}", unit="item", disable=not progress)
    try:
        for start in range(0, len(upserts), config.batch):
            part = upserts[start : start + config.batch]
            rows = np.fromiter((snapshot.row_of(i) for i in part), dtype=np.int64, count=len(part))
            order = np.argsort(rows)  # read the vector file forwards
            vectors = np.asarray(snapshot.vectors[rows[order]], dtype=np.float32)
            records = _records(gallery.path, part)
            data = [
                _row(part[j], desired[part[j]], vectors[pos], records[part[j]], root, dtype)
                for pos, j in enumerate(order.tolist())
            ]
            call(target, "upsert", client.upsert, target.collection, data)
            bar.update(len(part))
    finally:
        bar.close()


def _record_search(
    target: MilvusTarget,
    client: Any,
    snapshot: GallerySnapshot,
    identity: dict[str, Any],
    config: SyncConfig,
    report: SyncReport,
) -> None:
    """With a recall target, tune the query knob on the synced collection and record it for every searcher."""
    recorded = json.loads(properties(target, client).get(SEARCH_KEY) or "{}")
    if config.params.recall is None or len(snapshot) == 0:
        report.query = recorded.get("query", {})
        report.tuning = recorded.get("tuning")
        if recorded.get("type") != report.index_type:
            value = {"type": report.index_type, "build": report.index_params, "query": {}}
            set_property(target, client, SEARCH_KEY, json.dumps(value))
            report.query, report.tuning = {}, None
        return
    from clipmath.search.tuning import tune_recall

    index = MilvusIndex(target, snapshot.ids, int(snapshot.vectors.shape[1]), config.params, identity)
    tuning = tune_recall(index, snapshot.vectors, config.params.recall, sample=config.params.tune_queries)
    report.query, report.tuning = index.query_settings(), asdict(tuning)
    value = {"type": report.index_type, "build": report.index_params, "query": report.query, "tuning": report.tuning}
    set_property(target, client, SEARCH_KEY, json.dumps(value))
