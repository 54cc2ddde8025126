"""Captions as data: ``index --captions`` encodes each item's caption into STORE/text (incremental), searchable with
``search --target text`` and exported as clip-retrieval's row-aligned ``text_emb/``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("webdataset")

from clipmath.store import Gallery, IndexConfig  # noqa: E402
from clipmath.store.captions import index_captions, text_store  # noqa: E402
from clipmath.store.export import ExportConfig, export_store, normalised_half  # noqa: E402
from clipmath.store.shard_indexer import index_shards  # noqa: E402
from tests.conftest import write_images  # noqa: E402
from tests.test_shards import SRC_ENV, write_shards  # noqa: E402


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, tiny_encoder):
    base = tmp_path_factory.mktemp("captions")
    names = write_images(base / "images", 9, seed=4, size=(20, 20))
    shards = write_shards(base / "shards", base / "images", names, per_shard=4)
    index_shards(base / "store", shards, tiny_encoder, IndexConfig(), progress=False)
    report = index_captions(base / "store", tiny_encoder, commit_every=4, progress=False)
    assert (report.captions, report.added, report.unchanged) == (9, 9, 0)
    return base, names


def test_each_caption_is_encoded_once_under_its_items_id(captioned, tiny_encoder):
    base, _ = captioned
    images, texts = Gallery.open(base / "store"), Gallery.open(text_store(base / "store"))
    snapshot = texts.snapshot()
    assert sorted(snapshot.ids) == sorted(images.items())
    item_id = snapshot.ids[5]
    caption = images.record(item_id).extra["caption"]
    np.testing.assert_allclose(snapshot.vectors[5], tiny_encoder.encode_texts([caption])[0], atol=1e-6)
    again = index_captions(base / "store", tiny_encoder, progress=False)
    assert (again.added, again.unchanged) == (0, 9)


def test_search_target_text_finds_the_item_whose_caption_matches(captioned):
    base, names = captioned
    key = names[6].rsplit(".", 1)[0]
    command = [sys.executable, "-m", "clipmath", "search", "-s", str(base / "store"), "--text", f"a photo {key}",
               "--target", "text", "-k", "1", "--json"]  # fmt: skip
    result = subprocess.run(command, env=SRC_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["id"] == f"00001/{key}"


def test_export_writes_text_emb_row_aligned_with_img_emb(captioned, tmp_path):
    base, _ = captioned
    report = export_store(base / "store", tmp_path / "out", ExportConfig(shard_size=5), progress=False)
    assert report.text_emb and report.captions == 9
    import pyarrow.parquet as pq

    tables = [pq.read_table(tmp_path / "out" / "metadata" / f"metadata_{n}.parquet") for n in range(2)]
    ids = [i for table in tables for i in table["id"].to_pylist()]
    texts = Gallery.open(text_store(base / "store")).snapshot()
    exported = np.concatenate([np.load(tmp_path / "out" / "text_emb" / f"text_emb_{n}.npy") for n in range(2)])
    expected = normalised_half(np.stack([texts.vectors[texts.row_of(i)] for i in ids]))
    assert np.array_equal(exported, expected)


def test_import_of_an_export_keeps_the_caption_vectors_searchable(captioned, tmp_path, tiny_encoder):
    from clipmath.store.external import import_embeddings

    base, _ = captioned
    export_store(base / "store", tmp_path / "out", ExportConfig(shard_size=5), progress=False)
    key = tiny_encoder.transform.key
    report = import_embeddings(tmp_path / "out", tmp_path / "imported", tiny_encoder.info, key, progress=False)
    assert report.text_emb and report.rows == 9
    original = Gallery.open(text_store(base / "store")).snapshot()
    imported = Gallery.open(text_store(tmp_path / "imported")).snapshot()
    assert sorted(imported.ids) == sorted(original.ids)
    for item_id in original.ids:
        expected = normalised_half(original.vectors[original.row_of(item_id) : original.row_of(item_id) + 1])[0]
        assert np.array_equal(imported.vectors[imported.row_of(item_id)], expected)
