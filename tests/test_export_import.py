"""clip-retrieval's embeddings layout out (``clipmath export``, read back with embedding-reader and FAISS) and in
(``clipmath import-embeddings``: the npy files memory-mapped, never copied; search gives the original top-k)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipmath.errors import ClipmathError, StoreError
from clipmath.store import Gallery, IndexConfig, index_folder
from clipmath.store.check import check
from clipmath.store.export import ExportConfig, export_store, normalised_half
from clipmath.store.external import import_embeddings
from tests.conftest import write_images

pytest.importorskip("pyarrow")
SRC = str(Path(__file__).resolve().parent.parent / "src")
SRC_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.getenv("PYTHONPATH", "")])}
COUNT = 23


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_encoder) -> Path:
    base = tmp_path_factory.mktemp("export")
    write_images(base / "images", COUNT, seed=3, size=(24, 24))
    index_folder(base / "store", base / "images", tiny_encoder, IndexConfig(dtype="float16"), progress=False)
    return base / "store"


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "emb"
    report = export_store(store, out, ExportConfig(shard_size=10, index="flat"), progress=False)
    assert report.rows == COUNT and report.shards == ["0", "1", "2"]
    return out


def test_export_writes_clip_retrievals_layout_read_back_by_embedding_reader(store, exported):
    from embedding_reader import EmbeddingReader

    assert sorted(p.name for p in (exported / "img_emb").iterdir()) == [f"img_emb_{n}.npy" for n in range(3)]
    assert sorted(p.name for p in (exported / "metadata").iterdir()) == [f"metadata_{n}.parquet" for n in range(3)]
    first = np.load(exported / "img_emb" / "img_emb_0.npy")
    assert first.dtype == np.float16 and first.shape == (10, 32)
    np.testing.assert_allclose(np.linalg.norm(first.astype(np.float32), axis=1), 1.0, atol=2e-3)

    reader = EmbeddingReader(
        str(exported / "img_emb"),
        file_format="parquet_npy",
        metadata_folder=str(exported / "metadata"),
        meta_columns=["id", "image_path"],
    )
    assert (reader.count, reader.dimension) == (COUNT, 32)
    vectors, ids = [], []
    for batch, meta in reader(batch_size=7, show_progress=False):
        vectors.append(batch)
        ids.extend(meta["id"])
    snapshot = Gallery.open(store).snapshot()
    assert ids == snapshot.ids  # metadata rows aligned with the vectors, across shards
    assert np.array_equal(np.concatenate(vectors).astype(np.float16), normalised_half(snapshot.vectors))


def test_export_index_follows_autofaiss_conventions(store, exported):
    import faiss

    infos = json.loads((exported / "index_infos.json").read_text())
    assert infos["index_key"] == "Flat" and infos["index_path"] == "knn.index"
    assert (infos["nb vectors"], infos["vectors dimension"]) == (COUNT, 32)
    index = faiss.read_index(str(exported / "knn.index"))
    assert index.ntotal == COUNT and index.metric_type == faiss.METRIC_INNER_PRODUCT
    snapshot = Gallery.open(store).snapshot()
    query = normalised_half(snapshot.vectors[5:6]).astype(np.float32)
    _, rows = index.search(query, 1)
    assert rows[0, 0] == 5


def test_export_import_search_gives_the_original_top_k(store, exported, tmp_path):
    from clipmath.compose import CompositionQuery
    from clipmath.retrieval import Retriever

    result = subprocess.run(
        [sys.executable, "-m", "clipmath", "import-embeddings", str(exported), "--store", str(tmp_path / "imported"),
         "--model", "tiny-random-clip", "--json"],
        env=SRC_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["shards"], report["dtype"], report["id_column"]) == (COUNT, 3, "float16", "id")
    assert not list((tmp_path / "imported").glob("vectors-*"))  # the vectors were not copied

    original, imported = Retriever.open(store), Retriever.open(tmp_path / "imported")
    assert imported.gallery.model_id == "tiny-random-clip" and imported.gallery.info().count == COUNT
    for text in ("a red square", "a blue dog", "noise"):
        query = [CompositionQuery(text=text)]
        expected = [hit.id for hit in original.search(query, method="text", k=5)[0]]
        assert [hit.id for hit in imported.search(query, method="text", k=5)[0]] == expected


def test_a_single_shard_is_memory_mapped_in_place_and_changes_are_found(store, tmp_path, tiny_encoder):
    out = tmp_path / "one"
    export_store(store, out, ExportConfig(shard_size=100), progress=False)
    import_embeddings(out, tmp_path / "s", tiny_encoder.info, tiny_encoder.transform.key, progress=False)
    vectors = Gallery.open(tmp_path / "s").snapshot().vectors
    assert isinstance(vectors, np.memmap) and Path(vectors.filename) == out / "img_emb" / "img_emb_0.npy"
    assert check(tmp_path / "s").ok and check(tmp_path / "s").verified_rows == COUNT

    with pytest.raises(StoreError, match="read-only"):
        Gallery.open_for_writing(tmp_path / "s", tiny_encoder.info, tiny_encoder.transform.key, out)
    shard = out / "img_emb" / "img_emb_0.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    stat = shard.stat()
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only the checksum sees it
    found = check(tmp_path / "s")
    assert not found.ok and "changed since it was imported" in found.problems[0]
    shard.write_bytes(bytes(data[:-64]))
    with pytest.raises(StoreError, match="changed since it was imported"):
        Gallery.open(tmp_path / "s").snapshot()


def test_import_refuses_a_model_of_another_dimension(exported, tmp_path):
    from clipmath.encoders.identity import EncoderInfo

    other = EncoderInfo(model_id="wide", backend="test", dim=64, pretrained=False)
    with pytest.raises(ClipmathError, match="32-dimensional"):
        import_embeddings(exported, tmp_path / "s", other, "center", progress=False)
    assert not (tmp_path / "s" / "manifest.sqlite").exists()
