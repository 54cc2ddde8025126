"""Milvus as an index kind: ``milvus:URI[#COLLECTION]``, a gallery synced into a Milvus collection.

``URI`` is a local ``*.db`` path (Milvus Lite, embedded in this process, no server) or ``http(s)://host:port`` (a
Milvus standalone server or cluster; the token and database come from options or ``CLIPMATH_MILVUS_TOKEN`` /
``CLIPMATH_MILVUS_DB``, and never appear in messages). ``COLLECTION`` defaults to ``clipmath``.

clipmath computes the query vectors; Milvus answers top-k and filters; rows map back to the store by id, so results
have the same shape as the in-process kinds. The collection is filled by :func:`clipmath.store.sync.sync_store`
(``clipmath sync``), which records the store's identity in the collection's properties and refuses another model.

Milvus Lite 3.x (checked: milvus-lite 3.2.2) answers FLAT, IVF_FLAT, IVF_SQ8, HNSW and HNSW_SQ, and holds
float32 vectors only; IVF_PQ and DISKANN need a server (DISKANN: a server with it enabled).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from clipmath.errors import ClipmathError
from clipmath.search.base import Exclusions, SearchResults, VectorIndex, check_queries, pad_results, top_k_sorted
from clipmath.search.params import IndexParams

PREFIX = "milvus:"
DEFAULT_COLLECTION = "clipmath"
TOKEN_ENV, DB_ENV, TIMEOUT_ENV = "CLIPMATH_MILVUS_TOKEN", "CLIPMATH_MILVUS_DB", "CLIPMATH_MILVUS_TIMEOUT"
#: collection properties clipmath writes: the store's identity, the state of the last finished sync, the index
IDENTITY_KEY, SYNCED_KEY, SEARCH_KEY = "clipmath.identity", "clipmath.synced", "clipmath.search"
#: the value of SYNCED_KEY while a sync changes the collection (a state hash once it is done)
IN_PROGRESS = "syncing"
#: Milvus' largest top-k
MAX_LIMIT = 16384
#: index types per engine; Milvus Lite's are the ones milvus-lite 3.2 builds (FAISS underneath)
LITE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
SERVER_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "HNSW_SQ", "DISKANN", "AUTOINDEX")
#: metadata fields of a clipmath collection (besides ``id`` and ``vector``); filters may name any of them
FIELDS = ("sha256", "path", "folder", "mtime", "width", "height", "caption", "meta")


class MilvusError(ClipmathError):
    """Milvus is unreachable, slow, or holds a collection that does not fit the store."""

    http_status = 503  # a server answering for it says the back end is unavailable


@dataclass(frozen=True)
class MilvusTarget:
    """Where a gallery lives in Milvus. ``token`` never shows in :meth:`where` or in ``repr``."""

    uri: str
    collection: str = DEFAULT_COLLECTION
    token: str = field(default="", repr=False)
    db_name: str = ""
    timeout: float = 10.0

    @classmethod
    def parse(
        cls,
        kind: str,
        collection: str | None = None,
        token: str | None = None,
        db_name: str | None = None,
        timeout: float | None = None,
    ) -> MilvusTarget:
        """``milvus:URI[#COLLECTION]`` (or a bare URI); options win over the kind's ``#COLLECTION`` and the env."""
        text = kind[len(PREFIX) :] if kind.startswith(PREFIX) else kind
        uri, _, named = text.partition("#")
        if not uri:
            raise MilvusError("a Milvus index needs a URI: milvus:PATH.db (Milvus Lite) or milvus:http://HOST:PORT")
        if not uri.startswith(("http://", "https://")):
            if not uri.endswith(".db"):
                raise MilvusError(f"{uri}: a Milvus Lite path ends in .db (a server URI starts with http://)")
            uri = str(Path(uri).expanduser().resolve())
        name = collection or named or DEFAULT_COLLECTION
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise MilvusError(f"collection name {name!r}: letters, digits and _ only, not starting with a digit")
        wait = timeout if timeout is not None else float(os.environ.get(TIMEOUT_ENV, "10"))
        return cls(
            uri,
            name,
            token if token is not None else os.environ.get(TOKEN_ENV, ""),
            db_name if db_name is not None else os.environ.get(DB_ENV, ""),
            wait,
        )

    @property
    def lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://"))

    def where(self) -> str:
        """``URI#COLLECTION`` (plus the database), safe to print."""
        db = f" (database {self.db_name})" if self.db_name else ""
        return f"{self.uri}#{self.collection}{db}"

    def index_types(self) -> tuple[str, ...]:
        return LITE_INDEX_TYPES if self.lite else SERVER_INDEX_TYPES


# ---- connections --------------------------------------------------------------------------------------------
_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def _quiet_library_logs() -> None:
    # pymilvus and milvus-lite log their own tracebacks and warnings (e.g. query_iterator's timestamp fallback);
    # clipmath reports failures itself as one line
    for name in ("pymilvus", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def connect(target: MilvusTarget) -> Any:
    """A ``MilvusClient`` for ``target`` (shared per URI, token and database within the process)."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusError("the milvus index kind needs pymilvus: pip install 'clipmath[milvus]'") from None
    _quiet_library_logs()
    key = (target.uri, target.token, target.db_name)
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        if target.lite and not Path(target.uri).parent.is_dir():
            raise MilvusError(f"{target.uri}: the folder for the Milvus Lite database does not exist")
        options: dict[str, Any] = {"uri": target.uri, "timeout": target.timeout}
        if target.token:
            options["token"] = target.token
        if target.db_name:
            options["db_name"] = target.db_name
        try:
            client = MilvusClient(**options)
        except Exception as exc:  # pymilvus raises MilvusException, grpc errors or ConnectionError
            raise MilvusError(f"Milvus at {target.where()} is unreachable: {_short(exc)}") from None
        _clients[key] = client
        return client


def close_all() -> None:
    """Close every client this process opened, and stop the Milvus Lite servers they started."""
    with _clients_lock:
        entries = list(_clients.items())
        _clients.clear()
    for (uri, _, _), client in entries:
        _close(uri, client)


def _close(uri: str, client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    if not uri.startswith(("http://", "https://")):
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)  # waits for its background work (index builds)
        except ImportError:
            pass


def settle(target: MilvusTarget, client: Any, wait: float = 600.0) -> Any:
    """Wait until every flushed row of the collection is searched through its index; returns the client to use.

    Until then a search answers part of the collection brute force, and tuning would measure a recall the index
    does not give. Milvus Lite builds a flushed segment's index in a background thread (its ``describe_index``
    says finished all along): its engine is closed, which waits for that work, and loaded again, which builds
    what is missing before it returns. A server counts its pending rows, polled here."""
    if target.lite:
        with _clients_lock:
            _clients.pop((target.uri, target.token, target.db_name), None)
        _close(target.uri, client)
        client = connect(target)
        call(target, "load the collection", client.load_collection, target.collection)
        return client
    deadline = time.monotonic() + wait
    while int(describe_index(target, client).get("pending_index_rows") or 0) > 0:
        if time.monotonic() > deadline:
            raise MilvusError(f"Milvus at {target.where()}: the index is still being built after {wait:.0f} s")
        time.sleep(1.0)
    return client


def call(target: MilvusTarget, what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` against Milvus, any failure as one :class:`MilvusError` line naming ``what``."""
    try:
        return fn(*args, **kwargs)
    except MilvusError:
        raise
    except Exception as exc:
        raise MilvusError(f"Milvus at {target.where()}: {what} failed: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]


# ---- the collection: schema, identity, index ---------------------------------------------------------------
def properties(target: MilvusTarget, client: Any) -> dict[str, str]:
    info = call(target, "describe the collection", client.describe_collection, target.collection)
    return dict(info.get("properties") or {})


def set_property(target: MilvusTarget, client: Any, key: str, value: str) -> None:
    call(target, "record the sync state", client.alter_collection_properties, target.collection, {key: value})


def check_identity(target: MilvusTarget, props: dict[str, str], identity: dict[str, Any]) -> None:
    """Refuse a collection filled from another embedding space (model, preprocessing, dimension)."""
    recorded = json.loads(props.get(IDENTITY_KEY) or "{}")
    if not recorded:
        raise MilvusError(f"{target.where()} is not a clipmath collection (no {IDENTITY_KEY} property)")
    for key in ("model_id", "preprocessing", "dim"):
        if key in identity and str(recorded.get(key)) != str(identity[key]):
            raise MilvusError(
                f"{target.where()} holds {key} {recorded.get(key)!r}, this store {identity[key]!r}: "
                "vectors of two embedding spaces cannot be mixed (use another collection)"
            )


def built_with(index: dict[str, Any]) -> dict[str, Any]:
    """The build parameters (``nlist``, ``M``...) of an index as :func:`describe_index` gives it."""
    params = index.get("params") or {}
    if isinstance(params, str):
        params = json.loads(params)
    keys = ("nlist", "M", "efConstruction", "m", "nbits")
    return {k: int(v) for k, v in {**params, **index}.items() if k in keys}


def knob_of(index_type: str) -> str | None:
    """The query knob that trades speed for recall, named as :class:`IndexParams` names it."""
    if index_type.startswith("HNSW"):
        return "ef_search"
    if index_type.startswith("IVF"):
        return "nprobe"
    if index_type == "DISKANN":
        return "search_list"
    return None


def search_params(index_type: str, params: IndexParams, k: int, search_list: int = 100) -> dict[str, Any]:
    knob = knob_of(index_type)
    inner: dict[str, Any] = {}
    if knob == "ef_search":
        inner["ef"] = max(params.ef_search, k)
    elif knob == "nprobe":
        inner["nprobe"] = params.nprobe
    elif knob == "search_list":
        inner["search_list"] = max(search_list, k)
    return {"metric_type": "IP", "params": inner}


def describe_index(target: MilvusTarget, client: Any) -> dict[str, Any]:
    """The vector index of the collection (``{}`` when it has none)."""
    names = call(target, "list indexes", client.list_indexes, target.collection, field_name="vector")
    if not names:
        return {}
    return dict(call(target, "describe the index", client.describe_index, target.collection, names[0]))


# ---- filters ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchFilter:
    """What hits must match: a folder (and what is under it), a modification-time range (Unix seconds), a caption
    substring, metadata fields equal to values. Milvus answers it (``to_expr``); nothing is filtered after top-k."""

    folder: str | None = None
    since: float | None = None
    until: float | None = None
    caption: str | None = None
    meta: tuple[tuple[str, str | int | float | bool], ...] = ()

    def to_expr(self) -> str:
        parts = []
        if self.folder:
            folder = PurePosixPath(self.folder.strip("/")).as_posix()
            parts.append(f"(folder == {_quote(folder)} or folder like {_quote(_like_prefix(folder + '/'))})")
        if self.since is not None:
            parts.append(f"mtime >= {int(self.since)}")
        if self.until is not None:
            parts.append(f"mtime < {int(self.until)}")
        if self.caption:
            parts.append(f"caption like {_quote('%' + _like_escape(self.caption) + '%')}")
        for key, value in self.meta:
            if not key.replace("_", "a").isalnum():
                raise MilvusError(f"metadata field {key!r}: letters, digits and _ only")
            literal = _quote(value) if isinstance(value, str) else json.dumps(value)
            parts.append(f'meta["{key}"] == {literal}')
        return " and ".join(parts)

    def __bool__(self) -> bool:
        return bool(self.to_expr())


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(prefix: str) -> str:
    return _like_escape(prefix) + "%"


# ---- the index ------------------------------------------------------------------------------------------------
class MilvusIndex(VectorIndex):
    """A synced collection behind :class:`VectorIndex`: rows are the store snapshot's rows (``ids[row]``)."""

    #: The most hits one search returns (Milvus' own limit on top-k).
    max_depth = MAX_LIMIT

    def __init__(
        self,
        target: MilvusTarget,
        ids: Sequence[str],
        dim: int,
        params: IndexParams | None = None,
        identity: dict[str, Any] | None = None,
        state: str | None = None,
    ) -> None:
        self.target = target
        self.kind = PREFIX + target.where()
        self.client = connect(target)
        if not call(target, "look up the collection", self.client.has_collection, target.collection):
            raise MilvusError(f"{target.where()} has no collection yet: sync the store to it first (clipmath sync)")
        props = properties(target, self.client)
        if identity:
            check_identity(target, props, identity)
        index = describe_index(target, self.client)
        self.index_type = str(index.get("index_type", "FLAT"))
        self.ids = list(ids)
        self._row_of = {name: row for row, name in enumerate(self.ids)}
        self.dim = dim
        self.tuning = None
        self.search_list = 100
        recorded = json.loads(props.get(SEARCH_KEY) or "{}").get("query", {})
        base = params or IndexParams()
        known = {k: int(v) for k, v in recorded.items() if k in ("ef_search", "nprobe")}
        self.params = replace(base, **known) if base.recall is None else base
        self.search_list = int(recorded.get("search_list", self.search_list))
        #: the store state the collection was last synced at differs from the store's (hits may lag behind)
        self.stale = state is not None and props.get(SYNCED_KEY) != state
        call(target, "load the collection", self.client.load_collection, target.collection)

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def tunable(self) -> str | None:
        return knob_of(self.index_type)

    def knob_values(self, knob: str | None) -> list[int]:
        if knob == "nprobe":
            nlist = int(self.index_params().get("nlist", 1024))
            return [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if v < nlist] + [nlist]
        if knob in ("ef_search", "search_list"):
            return [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        return [0]

    def index_params(self) -> dict[str, Any]:
        return built_with(describe_index(self.target, self.client))

    def with_params(self, **changes: int) -> MilvusIndex:
        """Change query knobs (``ef_search``, ``nprobe``, ``search_list``) in place; returns self."""
        if "search_list" in changes:
            self.search_list = int(changes.pop("search_list"))
        changes.pop("refine_factor", None)
        self.params = replace(self.params, **changes)
        return self

    def query_settings(self) -> dict[str, int]:
        """The query knob and its value, as recorded in the collection after tuning."""
        knob = self.tunable
        if knob == "search_list":
            return {"search_list": self.search_list}
        return {knob: int(getattr(self.params, knob))} if knob else {}

    def search(
        self, queries: np.ndarray, k: int, exclude: Exclusions = None, where: SearchFilter | None = None
    ) -> SearchResults:
        queries = check_queries(queries, self.dim)
        k = max(1, int(k))
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        limit = min(MAX_LIMIT, k + extra)
        expr = where.to_expr() if where else ""
        answers = call(
            self.target,
            "search",
            self.client.search,
            self.target.collection,
            data=queries,
            limit=limit,
            filter=expr,
            output_fields=[],
            search_params=search_params(self.index_type, self.params, limit, self.search_list),
            timeout=self.target.timeout,
        )
        out_scores, out_rows = [], []
        for qi, hits in enumerate(answers):
            rows = np.fromiter((self._row_of.get(h["id"], -1) for h in hits), dtype=np.int64, count=len(hits))
            scores = np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits))
            keep = rows >= 0  # ids the store no longer holds (the collection lags behind) are dropped
            if exclude is not None and len(exclude[qi]):
                keep &= ~np.isin(rows, np.asarray(list(exclude[qi]), dtype=np.int64))
            top_scores, top_rows = top_k_sorted(scores[keep], rows[keep], k)
            out_scores.append(top_scores)
            out_rows.append(top_rows)
        return pad_results(out_scores, out_rows, k)

    def health(self) -> dict[str, Any]:
        """The back end's state for a health check: ``ok`` and what was found (never raises)."""
        try:
            state = call(self.target, "load state", self.client.get_load_state, self.target.collection)
            return {"backend": "milvus", "where": self.target.where(), "ok": True, "state": str(state.get("state"))}
        except MilvusError as exc:
            return {"backend": "milvus", "where": self.target.where(), "ok": False, "error": str(exc)}


def open_milvus_index(
    kind: str,
    vectors: np.ndarray,
    ids: Sequence[str] | None,
    params: IndexParams,
    identity: dict[str, Any] | None = None,
    state: str | None = None,
) -> MilvusIndex:
    """The :class:`MilvusIndex` of ``kind`` (``milvus:URI[#COLLECTION]``) over a store snapshot's ``ids``."""
    if ids is None:
        raise MilvusError("a Milvus index answers for a store: open it through Retriever (it needs the store's ids)")
    return MilvusIndex(MilvusTarget.parse(kind), ids, int(vectors.shape[1]), params, identity, state)
