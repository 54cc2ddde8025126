"""Export a store in clip-retrieval's embeddings layout (what ``clip-retrieval inference`` writes, what
embedding-reader and autofaiss read, the layout LAION publishes its embeddings in)::

    OUT/img_emb/img_emb_{N}.npy           float16, L2-normalised, ``shard_size`` rows each
    OUT/text_emb/text_emb_{N}.npy         the captions' vectors, row-aligned (when STORE/text holds every item's)
    OUT/metadata/metadata_{N}.parquet     row-aligned with img_emb_{N}: image_path, id, caption, url, width, height
    OUT/knn.index + OUT/index_infos.json  with ``index``: an inner-product FAISS index over all rows (autofaiss' names)

Shard numbers are zero-padded to one width, so a sorted file listing (embedding-reader's) is numeric order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import ClipmathError
from clipmath.store.gallery import Gallery
from clipmath.store.manifest import py_id

#: The layouts ``export`` writes (one today).
EXPORT_FORMATS = ("clip-retrieval",)


@dataclass
class ExportConfig:
    """``shard_size``: rows per npy/parquet pair (clip-retrieval writes 10**6 by default); ``index``: an index kind
    (``flat``, ``ivf``, ``hnsw``, ``ivfpq``... or a FAISS factory string) to write as ``knn.index``, or None."""

    format: str = "clip-retrieval"
    shard_size: int = 1_000_000
    index: str | None = None


@dataclass
class ExportReport:
    out: Path
    rows: int = 0
    dim: int = 0
    model: str = ""
    shards: list[str] = field(default_factory=list)
    captions: int = 0
    text_emb: bool = False
    index: str | None = None
    seconds: float = 0.0


def export_store(store: str | Path, out: str | Path, config: ExportConfig | None = None, progress: bool = True):
    """Write the store at ``store`` to the folder ``out`` in ``config.format``; returns an :class:`ExportReport`."""
    config = config or ExportConfig()
    if config.format not in EXPORT_FORMATS:
        raise ClipmathError(f"unknown export format {config.format!r} (known: {', '.join(EXPORT_FORMATS)})")
    if config.shard_size < 1:
        raise ClipmathError("the export shard_size must be at least 1")
    started = time.monotonic()
    out = Path(out)
    with Gallery.open(store) as gallery:
        snapshot = gallery.snapshot()
        n, dim = len(snapshot), gallery.dim
        report = ExportReport(out=out, rows=n, dim=dim, model=snapshot.model_id)
        shards = max(1, -(-n // config.shard_size))
        width = len(str(shards - 1))
        metadata = _metadata_rows(gallery)
        texts = _text_vectors(store, snapshot.ids)
        report.text_emb = texts is not None
        folders = ("img_emb", "metadata", "text_emb") if texts is not None else ("img_emb", "metadata")
        for folder in folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
        for number in tqdm(range(shards), desc="exporting", unit="shard", disable=not progress):
            start, stop = number * config.shard_size, min(n, (number + 1) * config.shard_size)
            suffix = f"{number:0{width}d}"
            _save_npy(out / "img_emb" / f"img_emb_{suffix}.npy", normalised_half(snapshot.vectors[start:stop]))
            if texts is not None:
                vectors, rows_of = texts
                text = normalised_half(vectors[rows_of[start:stop]])
                _save_npy(out / "text_emb" / f"text_emb_{suffix}.npy", text)
            rows = [next(metadata) for _ in range(stop - start)]
            if [r["id"] for r in rows] != snapshot.ids[start:stop]:
                raise ClipmathError(f"{store} changed during the export; run it again")
            report.captions += sum(r["caption"] is not None for r in rows)
            _save_parquet(out / "metadata" / f"metadata_{suffix}.parquet", rows, snapshot.root)
            report.shards.append(suffix)
        if config.index:
            report.index = write_knn_index(out, snapshot.vectors, config.index)
    report.seconds = time.monotonic() - started
    return report


def _text_vectors(store: str | Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The caption store's vectors and, per exported id, its row there; None unless it holds every id's caption."""
    from clipmath.store.captions import has_text_store, text_store

    if not has_text_store(store):
        return None
    with Gallery.open(text_store(store)) as texts:
        snapshot = texts.snapshot()
    rows = [snapshot.row_of(item_id) for item_id in ids]
    if any(row is None for row in rows):
        return None
    return snapshot.vectors, np.asarray(rows, dtype=np.int64)


def normalised_half(vectors: np.ndarray) -> np.ndarray:
    """Rows L2-normalised in float32, then rounded to float16 (clip-retrieval's stored precision)."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1)).astype(np.float16)


def write_knn_index(out: Path, vectors: np.ndarray, kind: str) -> str:
    """Build an inner-product index of ``kind`` over ``vectors`` (as exported: float16 rounded) and write it as
    ``knn.index`` with autofaiss' ``index_infos.json``; returns the FAISS factory string used."""
    from clipmath.search.faiss_index import FaissIndex
    from clipmath.search.kinds import factory_string, kind_spec
    from clipmath.search.params import IndexParams

    if kind_spec(kind).faiss_description is None:
        kind = "flat"  # a kind FAISS does not build (exact search, Milvus) is written as a flat FAISS index
    n, dim = vectors.shape
    params = IndexParams()
    factory = factory_string(kind, n, dim, params)
    index = FaissIndex.build(_AsExported(vectors), kind, params, factory=factory)
    index.save(out / "knn.index")
    size = (out / "knn.index").stat().st_size
    infos = {
        "index_key": factory,
        "index_param": _index_param(index),
        "index_path": "knn.index",
        "size in bytes": size,
        "nb vectors": n,
        "vectors dimension": dim,
        "compression ratio": round(n * dim * 4 / size, 3) if size else 0.0,
        "metric_type": "inner_product",
    }
    (out / "index_infos.json").write_text(json.dumps(infos, indent=2) + "\n")
    return factory


class _AsExported:
    """``vectors`` read as exported (normalised, float16-rounded) and handed out as float32, a slice at a time: the
    index is built without a float32 copy of the store in memory."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.shape = vectors.shape

    def __getitem__(self, key) -> np.ndarray:
        return normalised_half(self.vectors[key]).astype(np.float32)


def _index_param(index) -> str:
    import faiss

    inner = faiss.downcast_index(index.index)
    if hasattr(inner, "nprobe"):
        return f"nprobe={inner.nprobe}"
    hnsw = getattr(inner, "hnsw", None)
    return f"efSearch={hnsw.efSearch}" if hnsw is not None else ""


def _metadata_rows(gallery: Gallery) -> Iterator[dict]:
    cursor = gallery.manifest.execute("SELECT id, sha256, width, height, extra FROM items ORDER BY vec_row")
    for item_id, sha256, width, height, extra in cursor:
        held = json.loads(extra) if extra else {}
        meta = held.get("meta") or {}
        yield {
            "id": py_id(item_id),
            "caption": held.get("caption"),
            "url": meta.get("url"),
            "width": width,
            "height": height,
            "sha256": sha256,
        }


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _save_parquet(path: Path, rows: list[dict], root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "image_path": pa.array([str(root / r["id"]) for r in rows], pa.string()),
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "caption": pa.array([r["caption"] for r in rows], pa.string()),
        "url": pa.array([r["url"] for r in rows], pa.string()),
        "width": pa.array([r["width"] for r in rows], pa.int32()),
        "height": pa.array([r["height"] for r in rows], pa.int32()),
        "sha256": pa.array([r["sha256"] for r in rows], pa.string()),
    }
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)
