"""Precomputed embeddings as a store: a clip-retrieval / LAION embeddings folder opened without copying its vectors.

``import_embeddings(FOLDER, STORE, encoder)`` reads the folder's layout (``img_emb/img_emb_{N}.npy``, optional
row-aligned ``metadata/metadata_{N}.parquet``) and writes only a manifest into ``STORE``: one row per item (its id,
caption, url, size) and one row per npy shard (its path, data offset, rows, size, mtime and the SHA-256 of its
vector bytes). The vectors stay in the npy files, which the store memory-maps when it is read. The model named must
have the embeddings' dimension; it is recorded as the store's model, so search, captioning and ``serve`` encode
queries with it.

Ids come from the metadata's ``id`` column (what ``clipmath export`` writes), else ``image_path``, ``key`` or
``url``, else ``{shard}/{row}``; if a column repeats an id, ``{shard}/{row}`` is used for all.

Reading: one shard is mapped as it is (no copy at all); several shards are mapped and gathered into one array in
memory when the store is opened for search (the files are never copied on disk). An imported store is read-only.
A shard whose size or mtime changed since the import is reported as damage; ``clipmath check`` (:func:`check_external`)
re-hashes every shard's bytes against the checksums taken at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from clipmath.errors import ClipmathError, StoreError
from clipmath.store.gallery import Gallery
from clipmath.store.manifest import MANIFEST, SCHEMA, connect, damaged, new_meta, write_meta

if TYPE_CHECKING:
    from clipmath.encoders.base import EncoderInfo

#: The meta value that marks an imported store, and its (virtual) vector file name.
EXTERNAL = "external"
EXTERNAL_VECTOR_FILE = "vectors-external"
EXTERNAL_TABLE = """
CREATE TABLE IF NOT EXISTS external_shards (
    number INTEGER PRIMARY KEY, path TEXT NOT NULL, first_row INTEGER NOT NULL, rows INTEGER NOT NULL,
    data_offset INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT
);
"""
#: Metadata columns tried, in order, for item ids.
ID_COLUMNS = ("id", "image_path", "key", "url")
_HASH_BLOCK = 1 << 23


@dataclass
class ImportConfig:
    """``checksum``: hash every shard's vector bytes at import (reads them once; off: size and mtime only)."""

    checksum: bool = True


@dataclass
class ImportReport:
    store: Path
    folder: Path
    model: str
    rows: int = 0
    dim: int = 0
    dtype: str = ""
    shards: int = 0
    captions: int = 0
    id_column: str = ""
    text_emb: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class NpyShard:
    number: int
    path: Path
    rows: int
    dim: int
    dtype: str
    data_offset: int


def read_npy_shards(folder: Path, kind: str = "img") -> list[NpyShard]:
    """The ``{kind}_emb/*.npy`` shards of an embeddings folder (``img``: or of the folder itself), in shard-number
    order."""
    folder = Path(folder)
    emb = folder / f"{kind}_emb" if (folder / f"{kind}_emb").is_dir() or kind != "img" else folder
    files = sorted(emb.glob("*.npy"), key=_shard_number)
    if not files:
        raise ClipmathError(f"no embeddings ({kind}_emb/*.npy) in {folder}")
    shards = [_npy_header(_shard_number(path), path) for path in files]
    dims, dtypes = {s.dim for s in shards}, {s.dtype for s in shards}
    if len(dims) > 1 or len(dtypes) > 1:
        raise ClipmathError(f"the shards in {emb} differ in dimension or dtype ({sorted(dims)}, {sorted(dtypes)})")
    if shards[0].dtype not in ("float16", "float32"):
        raise ClipmathError(f"{emb} holds {shards[0].dtype} embeddings; a store reads float16 or float32")
    return shards


def import_embeddings(
    folder: str | Path,
    store: str | Path,
    encoder: EncoderInfo,
    preprocessing: str,
    config: ImportConfig | None = None,
    progress: bool = True,
) -> ImportReport:
    """Open the embeddings folder ``folder`` as a new store at ``store`` (nothing but a manifest is written)."""
    config = config or ImportConfig()
    started = time.monotonic()
    folder, store = Path(folder).resolve(), Path(store)
    shards = read_npy_shards(folder)
    dim, dtype = shards[0].dim, shards[0].dtype
    if encoder.dim != dim:
        raise ClipmathError(
            f"{folder} holds {dim}-dimensional embeddings; model {encoder.model_id} makes {encoder.dim}-dimensional"
        )
    if (store / MANIFEST).exists():
        raise ClipmathError(f"{store} already exists; import into a new store")
    report = ImportReport(store=store, folder=folder, model=encoder.model_id, dim=dim, dtype=dtype, shards=len(shards))
    metadata = _metadata_paths(folder)
    meta = new_meta(encoder.model_id, encoder.backend, dim, preprocessing, str(folder))
    texts = _text_shards(folder, shards)
    if texts is not None:  # the captions' vectors, row-aligned: STORE/text (same ids), written first
        from clipmath.store.captions import text_store

        _write_manifest(text_store(store), texts, metadata, meta, config, ImportReport(store, folder, report.model))
        report.text_emb = True
    report.rows = _write_manifest(store, shards, metadata, meta, config, report, progress)
    report.seconds = time.monotonic() - started
    return report


def _write_manifest(
    store: Path,
    shards: list[NpyShard],
    metadata: dict[int, Path],
    meta: dict[str, str],
    config: ImportConfig,
    report: ImportReport,
    progress: bool = False,
) -> int:
    """Write the manifest of an imported store (a scratch file renamed once complete); returns its rows."""
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / (MANIFEST + ".importing")
    tmp.unlink(missing_ok=True)
    conn = connect(tmp)
    conn.execute("PRAGMA journal_mode=OFF")  # a scratch file until renamed: made durable once, at the end
    conn.execute("PRAGMA synchronous=OFF")
    try:
        conn.executescript(SCHEMA + EXTERNAL_TABLE)
        conn.execute("DROP INDEX items_sha")  # no content hashes to look up (half the insert time without it)
        first_row, used = 0, set()
        for shard in tqdm(shards, desc="importing", unit="shard", disable=not progress):
            ids, extras, sizes = _shard_metadata(metadata.get(shard.number), shard, report)
            if ids is None or any(i in used for i in ids) or len(set(ids)) != len(ids):
                ids = [f"{shard.number}/{row}" for row in range(shard.rows)]
            used.update(ids)
            stat = shard.path.stat()
            digest = _data_sha256(shard) if config.checksum else None
            with conn:
                conn.executemany(
                    "INSERT INTO items (id, sha256, size, mtime_ns, width, height, vec_row, extra) "
                    "VALUES (?, '', 0, 0, ?, ?, ?, ?)",
                    (
                        (item_id, w, h, first_row + row, json.dumps(extra) if extra else None)
                        for row, (item_id, extra, (w, h)) in enumerate(zip(ids, extras, sizes))
                    ),
                )
                conn.execute(
                    "INSERT INTO external_shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        shard.number,
                        str(shard.path),
                        first_row,
                        shard.rows,
                        shard.data_offset,
                        stat.st_size,
                        stat.st_mtime_ns,
                        digest,
                    ),
                )
            first_row += shard.rows
        values = {"vector_file": EXTERNAL_VECTOR_FILE, "vector_rows": str(first_row), "vector_source": EXTERNAL}
        with conn:
            write_meta(conn, {**meta, **values, "vector_dtype": shards[0].dtype})
        conn.execute("PRAGMA journal_mode=WAL")  # as every store's manifest
    finally:
        conn.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(store / MANIFEST)  # the store exists only once complete
    return first_row


def _text_shards(folder: Path, images: list[NpyShard]) -> list[NpyShard] | None:
    """The ``text_emb`` shards when they are row-aligned with the image shards (None otherwise, or absent)."""
    if not (folder / "text_emb").is_dir():
        return None
    try:
        texts = read_npy_shards(folder, "text")
    except ClipmathError:
        return None
    aligned = [(t.number, t.rows, t.dim) for t in texts] == [(i.number, i.rows, i.dim) for i in images]
    return texts if aligned else None


def check_external(conn: sqlite3.Connection, meta: dict[str, str], report) -> None:
    """What :func:`clipmath.store.check.check` verifies of an imported store: every shard present, unchanged in
    size, and its vector bytes hashing to the import checksum; rows and items agreeing with the shards."""
    shards = _shard_rows(conn)
    report.vector_rows = int(meta["vector_rows"])
    report.items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    verified = 0
    for shard, expected, (size, _) in shards:
        try:
            held = shard.path.stat().st_size
            actual = _data_sha256(shard) if expected is not None else None
        except OSError as exc:
            report.problems.append(f"embeddings shard {shard.path}: {exc.strerror or exc}")
            break
        if held != size or actual != expected:
            report.problems.append(f"embeddings shard {shard.path} changed since it was imported")
            break
        verified += shard.rows
    if sum(s.rows for s, _, _ in shards) != report.vector_rows:
        report.problems.append("the manifest's row count differs from its shards' rows")
    report.verified_rows = report.consistent_rows = verified


class ExternalGallery(Gallery):
    """A read-only store whose vector rows live in the npy shards of an embeddings folder."""

    def _map_vectors(self, vector_file: str, rows: int) -> np.ndarray:
        shards = self._checked_shards()
        if rows == 0:
            return np.zeros((0, self.dim), dtype=self.dtype)
        maps = [
            np.memmap(s.path, dtype=self.dtype, mode="r", offset=s.data_offset, shape=(s.rows, self.dim))
            for s in shards
            if s.rows
        ]
        vectors = maps[0] if len(maps) == 1 else np.concatenate(maps)
        return vectors[:rows]

    def _check_vector_length(self, meta: dict[str, str]) -> None:
        self._checked_shards()

    def _truncate_uncommitted(self) -> None:
        raise StoreError(f"{self.path} is an imported embeddings folder: it is read-only")

    def _checked_shards(self) -> list[NpyShard]:
        shards = []
        for shard, _, recorded in _shard_rows(self.manifest):
            try:
                info = shard.path.stat()
            except OSError:
                raise damaged(self.path, f"the embeddings shard {shard.path} is missing") from None
            if (info.st_size, info.st_mtime_ns) != recorded:
                raise damaged(self.path, f"the embeddings shard {shard.path} changed since it was imported")
            shards.append(shard)
        return shards


def is_external(meta: dict[str, str]) -> bool:
    return meta.get("vector_source") == EXTERNAL


def _shard_rows(conn: sqlite3.Connection) -> list[tuple[NpyShard, str | None, tuple[int, int]]]:
    """Each recorded shard with its import checksum and ``(size, mtime_ns)`` at import."""
    query = "SELECT number, path, rows, data_offset, sha256, size, mtime_ns FROM external_shards ORDER BY first_row"
    return [
        (NpyShard(n, Path(p), r, 0, "", off), digest, (size, mtime))
        for n, p, r, off, digest, size, mtime in conn.execute(query).fetchall()
    ]


def _shard_number(path: Path) -> int:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else 0


def _npy_header(number: int, path: Path) -> NpyShard:
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
        except ValueError as exc:
            raise ClipmathError(f"{path} is not a readable npy file ({exc})") from None
        offset = fh.tell()
    if len(shape) != 2 or fortran:
        raise ClipmathError(f"{path} holds an array of shape {shape}; embeddings are (rows, dim), C order")
    return NpyShard(number, path, int(shape[0]), int(shape[1]), str(np.dtype(dtype)), offset)


def _data_sha256(shard: NpyShard) -> str:
    digest = hashlib.sha256()
    with open(shard.path, "rb") as fh:
        fh.seek(shard.data_offset)
        for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _shard_metadata(path: Path | None, shard: NpyShard, report: ImportReport):
    """``(ids or None, extras, sizes)`` from the shard's metadata parquet (None ids: no usable id column)."""
    blank = [None] * shard.rows
    if path is None:
        return None, blank, [(None, None)] * shard.rows
    import pyarrow.parquet as pq

    wanted = {*ID_COLUMNS, "caption", "url", "width", "height"}
    table = pq.read_table(path, columns=[c for c in pq.read_schema(path).names if c in wanted])
    if table.num_rows != shard.rows:
        raise ClipmathError(f"{path} has {table.num_rows} rows, {shard.path.name} {shard.rows}: not row-aligned")
    names = table.column_names
    id_column = next((c for c in ID_COLUMNS if c in names), None)
    ids = [str(v) for v in table.column(id_column).to_pylist()] if id_column else None
    report.id_column = report.id_column or (id_column or "")

    def column(name: str) -> list:
        return table.column(name).to_pylist() if name in names else blank

    extras = []
    for caption, url in zip(column("caption"), column("url")):
        held = {}
        if caption is not None:
            held["caption"] = caption
            report.captions += 1
        if url is not None:
            held["meta"] = {"url": url}
        extras.append(held or None)
    return ids, extras, list(zip(column("width"), column("height")))


def _metadata_paths(folder: Path) -> dict[int, Path]:
    """``shard number -> metadata parquet`` of ``folder/metadata`` (empty when there is none)."""
    meta = folder / "metadata"
    return {_shard_number(path): path for path in meta.glob("*.parquet")} if meta.is_dir() else {}
