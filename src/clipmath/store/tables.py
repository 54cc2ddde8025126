"""A table of images as an index source: parquet, csv, tsv or jsonl rows naming local image files, optionally with
a caption each (img2dataset's input formats).

The path column is the first of ``path``, ``image_path``, ``filepath``, ``file``; the caption column (optional) the
first of ``caption``, ``text``, ``TEXT``. Relative paths are relative to the table's folder, which is the store's
image root; absolute paths must lie under it. The files are indexed as a folder's listed files are
(:func:`clipmath.store.indexer.index_folder` with ``files``: incremental, crash-safe), and each item keeps its
caption. Rows whose path is a URL are reported, not fetched (clipmath has no downloader; img2dataset is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clipmath.errors import ClipmathError
from clipmath.store.gallery import Gallery
from clipmath.store.indexer import IndexConfig, IndexReport, index_folder
from clipmath.store.manifest import db_id

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl")
PATH_COLUMNS = ("path", "image_path", "filepath", "file")
CAPTION_COLUMNS = ("caption", "text", "TEXT")


@dataclass
class TableRows:
    """The table's rows as ids under ``root`` with their captions (None: no caption), and its URL rows."""

    root: Path
    ids: list[str]
    captions: list[str | None]
    urls: list[str]


def is_table_spec(text: str) -> bool:
    return Path(text).suffix.lower() in TABLE_SUFFIXES


def read_table(path: str | Path) -> TableRows:
    """The rows of a parquet/csv/tsv/jsonl table of image paths (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ClipmathError(f"table not found: {path}")
    table = _load(path)
    names = table.column_names
    path_column = next((c for c in PATH_COLUMNS if c in names), None)
    if path_column is None:
        raise ClipmathError(f"{path} has no path column (one of {', '.join(PATH_COLUMNS)}); it has {', '.join(names)}")
    caption_column = next((c for c in CAPTION_COLUMNS if c in names), None)
    paths = [str(v) if v is not None else "" for v in table.column(path_column).to_pylist()]
    captions = table.column(caption_column).to_pylist() if caption_column else [None] * len(paths)
    root = path.parent.resolve()
    rows = TableRows(root, [], [], [])
    for entry, caption in zip(paths, captions):
        if "://" in entry:
            rows.urls.append(entry)
            continue
        rows.ids.append(_relative(Path(entry), root, path))
        rows.captions.append(None if caption is None else str(caption))
    return rows


def index_table(
    store: str | Path, table: str | Path, encoder: Encoder, config: IndexConfig | None = None, progress: bool = True
) -> IndexReport:
    """Index the local files a table names (ids relative to the table's folder) and keep their captions."""
    rows = read_table(table)
    report = index_folder(store, rows.root, encoder, config, files=rows.ids, progress=progress)
    report.bad.extend((url, "a URL: clipmath does not download (fetch with img2dataset, index its shards)")
                      for url in rows.urls)  # fmt: skip
    captioned = [(caption, item_id) for item_id, caption in zip(rows.ids, rows.captions) if caption is not None]
    if captioned:
        with Gallery.open_for_writing(store, encoder.info, encoder.transform.key, rows.root) as gallery:
            _set_captions(gallery, captioned)
    return report


def _set_captions(gallery: Gallery, captioned: list[tuple[str, str]]) -> None:
    """Each item's ``extra.caption`` (``extra`` is the JSON text :meth:`Gallery.commit` writes)."""
    with gallery.manifest as conn:
        conn.executemany(
            "UPDATE items SET extra = json_set(COALESCE(extra, '{}'), '$.caption', ?) WHERE id = ?",
            [(caption, db_id(item_id)) for caption, item_id in captioned],
        )


def _load(path: Path):
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".jsonl":
            import pyarrow.json as pj

            return pj.read_json(path)
        import pyarrow.csv as pc

        delimiter = "\t" if suffix == ".tsv" else ","
        return pc.read_csv(path, parse_options=pc.ParseOptions(delimiter=delimiter))
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise ClipmathError(f"{path} is not a readable {suffix[1:]} table: {str(exc).splitlines()[0]}") from None


def _relative(entry: Path, root: Path, table: Path) -> str:
    if not entry.is_absolute():
        return entry.as_posix()
    try:
        return entry.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ClipmathError(f"{entry} (in {table}) is not under the table's folder {root}") from None
