"""Stores at scale: float16 stores, and shard stores merged into one (equal to indexing the union)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clipmath.errors import StoreError
from clipmath.search import ExactIndex
from clipmath.store import Gallery, IndexConfig, index_folder
from clipmath.store.merge import merge_stores
from tests.conftest import write_images


def store_contents(path) -> dict[str, tuple]:
    """id -> (sha256, size, mtime, width, height, vector) of a store's committed state."""
    with Gallery.open(path) as gallery:
        snapshot = gallery.snapshot()
        out = {}
        for row, item_id in enumerate(snapshot.ids):
            record = gallery.record(item_id)
            out[item_id] = (
                record.sha256,
                record.size,
                record.mtime_ns,
                record.width,
                record.height,
                snapshot.vectors[row],
            )
        return out


def assert_same_store(left, right) -> None:
    a, b = store_contents(left), store_contents(right)
    assert sorted(a) == sorted(b)
    for item_id in a:
        assert a[item_id][:5] == b[item_id][:5], item_id
        np.testing.assert_allclose(a[item_id][5], b[item_id][5], atol=1e-6)


# ---- float16 stores ---------------------------------------------------------------------------------------------
def test_float16_store_round_trip_and_search(tmp_path, image_folder, tiny_encoder):
    full = index_folder(tmp_path / "f32", image_folder, tiny_encoder, progress=False)
    half = index_folder(tmp_path / "f16", image_folder, tiny_encoder, IndexConfig(dtype="float16"), progress=False)
    assert half.added == full.added == 12
    with Gallery.open(tmp_path / "f16") as g16, Gallery.open(tmp_path / "f32") as g32:
        s16, s32 = g16.snapshot(), g32.snapshot()
        assert g16.info().vector_dtype == "float16" and s16.vectors.dtype == np.float16
        assert s16.ids == s32.ids
        np.testing.assert_allclose(s16.vectors.astype(np.float32), s32.vectors, atol=1e-3)
        vector_bytes = lambda g: sum(p.stat().st_size for p in g.path.glob("vectors-*"))  # noqa: E731
        assert vector_bytes(g16) * 2 == vector_bytes(g32)
        # searched as it is stored: the float32 top-k of the stored float16 values
        queries = np.asarray(s32.vectors[:3])
        found = ExactIndex(s16.vectors).search(queries, 5).rows
        expected = ExactIndex(s16.vectors.astype(np.float32)).search(queries, 5).rows
        np.testing.assert_array_equal(found, expected)
        assert found[:, 0].tolist() == [0, 1, 2]
    # incremental re-run keeps the precision; asking another one for an existing store is refused
    again = index_folder(tmp_path / "f16", image_folder, tiny_encoder, progress=False)
    assert again.added == 0
    with pytest.raises(StoreError, match="float16 vectors, not float32"):
        index_folder(tmp_path / "f16", image_folder, tiny_encoder, IndexConfig(dtype="float32"), progress=False)
    with pytest.raises(StoreError, match="vector dtype 'int8'"):
        index_folder(tmp_path / "x", image_folder, tiny_encoder, IndexConfig(dtype="int8"), progress=False)


# ---- merging shards ---------------------------------------------------------------------------------------------
def test_merging_two_shards_of_one_folder_equals_indexing_the_union(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    names = write_images(folder, 10)
    shutil.copy(folder / names[0], folder / "copy_of_first.jpg")  # a duplicate across shards: one vector row
    everything = sorted(names + ["copy_of_first.jpg"])
    index_folder(tmp_path / "a.store", folder, tiny_encoder, files=everything[:6], progress=False)
    index_folder(tmp_path / "b.store", folder, tiny_encoder, files=everything[4:], progress=False)  # 2 overlap
    index_folder(tmp_path / "union.store", folder, tiny_encoder, progress=False)
    report = merge_stores([tmp_path / "a.store", tmp_path / "b.store"], tmp_path / "c.store", progress=False)
    assert report.total == 11 and report.already_present == 2 and report.vectors_written == 10
    assert_same_store(tmp_path / "c.store", tmp_path / "union.store")
    with Gallery.open(tmp_path / "c.store") as merged:
        assert merged.info().vector_rows == 10  # the duplicate content shares its row
    # merging again adds nothing; the merged store is still equal
    assert merge_stores([tmp_path / "a.store", tmp_path / "b.store"], tmp_path / "c.store", progress=False).added == 0
    assert_same_store(tmp_path / "c.store", tmp_path / "union.store")


def test_shards_of_sibling_folders_merge_under_their_common_root(tmp_path, tiny_encoder):
    write_images(tmp_path / "photos" / "a", 4, seed=1)
    write_images(tmp_path / "photos" / "b", 4, seed=2)  # the same file names as in a/: ids made unique by folder
    index_folder(tmp_path / "a.store", tmp_path / "photos" / "a", tiny_encoder, progress=False)
    index_folder(tmp_path / "b.store", tmp_path / "photos" / "b", tiny_encoder, progress=False)
    index_folder(tmp_path / "union.store", tmp_path / "photos", tiny_encoder, progress=False)
    report = merge_stores([tmp_path / "a.store", tmp_path / "b.store"], tmp_path / "c.store", progress=False)
    assert report.root == str((tmp_path / "photos").resolve()) and report.total == 8
    assert_same_store(tmp_path / "c.store", tmp_path / "union.store")


def test_merge_refuses_another_model_or_itself(tmp_path, image_folder, tiny_encoder, offline_encoder):
    index_folder(tmp_path / "a.store", image_folder, tiny_encoder, progress=False)
    index_folder(tmp_path / "b.store", image_folder, offline_encoder, progress=False)
    with pytest.raises(StoreError, match="model .* differs"):
        merge_stores([tmp_path / "a.store", tmp_path / "b.store"], tmp_path / "c.store", progress=False)
    with pytest.raises(StoreError, match="is one of the shards"):
        merge_stores([tmp_path / "a.store"], tmp_path / "a.store", progress=False)
