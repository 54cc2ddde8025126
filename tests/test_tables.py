"""A table (parquet, csv, tsv, jsonl) of image paths with captions as an index source."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from clipmath.errors import ClipmathError
from clipmath.store import Gallery, IndexConfig, index_folder
from clipmath.store.tables import index_table, read_table
from tests.conftest import write_images
from tests.test_shards import SRC_ENV

pa = pytest.importorskip("pyarrow")


@pytest.fixture
def images(tmp_path):
    names = write_images(tmp_path / "images", 6, seed=9, size=(20, 20))
    return tmp_path, names


def test_a_parquet_table_indexes_its_files_with_their_captions(images, tiny_encoder):
    base, names = images
    import pyarrow.parquet as pq

    paths = [f"images/{n}" for n in names[:4]] + [str(base / "images" / names[4]), "https://example.invalid/x.jpg"]
    captions = [f"caption {i}" for i in range(5)] + ["remote"]
    pq.write_table(pa.table({"image_path": paths, "caption": captions}), base / "list.parquet")

    report = index_table(base / "store", base / "list.parquet", tiny_encoder, IndexConfig(), progress=False)
    assert report.added == 5 and report.bad == [("https://example.invalid/x.jpg", report.bad[0][1])]
    assert "does not download" in report.bad[0][1]
    gallery = Gallery.open(base / "store")
    extra = gallery.record("images/" + names[4]).extra
    assert extra["caption"] == "caption 4" and extra["photo_meta"] == 1  # the caption, beside the photo metadata
    index_folder(base / "folder.store", base / "images", tiny_encoder, IndexConfig(), progress=False)
    a, b = Gallery.open(base / "folder.store").snapshot(), gallery.snapshot()
    for name in names[:5]:
        assert np.array_equal(a.vectors[a.row_of(name)], b.vectors[b.row_of("images/" + name)])


def test_csv_tsv_and_jsonl_tables_read_the_same_rows(images):
    base, names = images
    (base / "a.csv").write_text("path,caption\n" + "".join(f"images/{n},c {n}\n" for n in names))
    (base / "a.tsv").write_text("filepath\ttext\n" + "".join(f"images/{n}\tc {n}\n" for n in names))
    lines = (json.dumps({"path": f"images/{n}", "caption": f"c {n}"}) for n in names)
    (base / "a.jsonl").write_text("".join(line + "\n" for line in lines))
    rows = [read_table(base / f"a.{ext}") for ext in ("csv", "tsv", "jsonl")]
    assert all(r.ids == [f"images/{n}" for n in names] and r.captions == [f"c {n}" for n in names] for r in rows)
    (base / "bad.csv").write_text("url_only\nhttp://x\n")
    with pytest.raises(ClipmathError, match="no path column"):
        read_table(base / "bad.csv")


def test_the_index_command_takes_a_table(images):
    base, names = images
    (base / "list.csv").write_text("path,caption\n" + "".join(f"images/{n},c {n}\n" for n in names))
    command = [sys.executable, "-m", "clipmath", "index", str(base / "list.csv"), "--store", str(base / "s"),
               "--model", "tiny-random-clip", "--json"]  # fmt: skip
    result = subprocess.run(command, env=SRC_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == len(names)
    assert Gallery.open(base / "s").record(f"images/{names[0]}").extra["caption"] == f"c {names[0]}"
