"""Non-finite vectors: never stored (listed as bad files), never a query (one line at Python, CLI and HTTP
levels), and a gallery that somehow holds such rows still answers k finite results equal to exact search over the
finite rows; k below 1 and a gallery that is not 2-d are refused clearly."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from clipmath.errors import ClipmathError, SearchError, StoreError
from clipmath.search import make_index
from clipmath.search.exact import ExactIndex
from clipmath.store import Gallery, IndexConfig, ItemRecord, index_folder
from clipmath.store.merge import merge_stores
from tests.test_cli import SRC_ENV


def _gallery(rows: int = 5000, dim: int = 16, nan_rows: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    clean = rng.standard_normal((rows, dim)).astype(np.float32)
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)
    damaged = clean.copy()
    bad = rng.choice(rows, nan_rows, replace=False)
    damaged[bad[: nan_rows // 2]] = np.nan
    damaged[bad[nan_rows // 2 :], 0] = np.inf
    return clean, damaged, np.isfinite(damaged).all(axis=1), rng.standard_normal((4, dim)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("build", ["exact", "exact-resident", "faiss-flat"])
def test_a_gallery_with_nan_rows_still_answers_k_finite_results(dtype, build):
    _, damaged, finite, queries = _gallery(nan_rows=100 if dtype == "float32" else 2500)
    vectors = damaged.astype(dtype)
    if build == "faiss-flat":
        pytest.importorskip("faiss")
        index = make_index(vectors.astype(np.float32), "flat")
    else:
        index = ExactIndex(vectors, resident=build == "exact-resident")
    for k in (1, 10):
        got = index.search(queries, k)
        assert (got.rows >= 0).all() and np.isfinite(got.scores).all() and finite[got.rows].all()
        reference = ExactIndex(np.where(finite[:, None], vectors, 0).astype(np.float32)).search(queries, 5000)
        for q in range(len(queries)):
            wanted = [r for r in reference.rows[q] if finite[r]][:k]
            assert got.rows[q].tolist() == wanted


@pytest.mark.parametrize("query", [np.full(16, np.nan), np.r_[np.inf, np.zeros(15)], np.zeros(16)])
def test_a_nan_inf_or_zero_query_is_one_line(query):
    clean, *_ = _gallery()
    for index in (ExactIndex(clean), make_index(clean, "exact")):
        with pytest.raises(SearchError) as info:
            index.search(query.astype(np.float32), 5)
        assert "\n" not in str(info.value) and ("zero" in str(info.value) or "NaN" in str(info.value))


def test_k_below_one_and_malformed_galleries_are_refused():
    clean, *_ = _gallery()
    for k in (0, -3, 2.5, True):
        with pytest.raises(SearchError, match="'k'"):
            ExactIndex(clean).search(clean[:1], k)
    for gallery in (clean[0], clean[None], np.zeros((3, 0), np.float32)):
        with pytest.raises(SearchError, match="2-d"):
            ExactIndex(gallery)


def _toy(path, vectors, start=0):
    facts = SimpleNamespace(model_id="toy-model", backend="toy", dim=vectors.shape[1])
    records = [ItemRecord(f"v{start + i}.jpg", f"{start + i:064x}", 1, 1) for i in range(len(vectors))]
    return Gallery.open_for_writing(path, facts, "toy", path.parent), records  # type: ignore[arg-type]


def test_a_store_refuses_non_finite_vectors_and_the_indexer_lists_them(tmp_path, image_folder, tiny_encoder):
    gallery, records = _toy(tmp_path / "s", np.ones((2, 4), np.float32))
    with gallery, pytest.raises(StoreError, match="non-finite"):
        gallery.commit(records, np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]], np.float32))
    facts = SimpleNamespace(model_id="toy-model", backend="toy", dim=4)
    with Gallery.open_for_writing(tmp_path / "h", facts, "toy", tmp_path, dtype="float16") as half:  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="non-finite"):  # finite in float32, infinite once stored in float16
            half.commit(records[:1], np.array([[1e5, 0, 0, 0]], np.float32))

    class Broken:
        info, transform = tiny_encoder.info, tiny_encoder.transform

        def encode_images(self, images, batch_size=32):
            vectors = tiny_encoder.encode_images(images, batch_size=batch_size)
            vectors[::3] = np.nan  # NaN for every third image of each batch (commits of 5, 5, 2: 2 + 2 + 1)
            return vectors

    report = index_folder(tmp_path / "store", image_folder, Broken(), IndexConfig(commit_every=5), progress=False)
    bad = dict(report.bad)
    assert report.added == 7 and len(bad) == 5 and all("non-finite" in reason for reason in bad.values())
    with Gallery.open(tmp_path / "store") as stored:
        assert np.isfinite(np.asarray(stored.snapshot().vectors)).all()
        assert {item for item, _ in stored.bad_files()} == set(bad)


def test_merge_never_copies_a_non_finite_vector(tmp_path):
    shard = tmp_path / "shard"
    gallery, records = _toy(shard, np.ones((3, 4), np.float32))
    with gallery:
        gallery.commit(records, np.eye(3, 4, dtype=np.float32))
    with open(next(shard.glob("vectors-*")), "r+b") as fh:  # written by an older clipmath, say
        fh.seek(16)
        fh.write(np.float32(np.nan).tobytes())
    with sqlite3.connect(shard / "manifest.sqlite") as conn:  # (and its checksum agrees)
        conn.execute("DELETE FROM chunks")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'checksums_from'")
    report = merge_stores([shard], tmp_path / "merged", progress=False)
    assert report.non_finite == ["v1.jpg"] and report.added == 2
    with Gallery.open(tmp_path / "merged") as merged:
        assert np.isfinite(np.asarray(merged.snapshot().vectors)).all()
        assert [item for item, _ in merged.bad_files()] == ["v1.jpg"]


def test_zero_and_nan_queries_at_the_cli(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "store"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    name = sorted(p.name for p in image_folder.iterdir())[0]
    for expression in (f"+{image_folder / name} -{image_folder / name}",):
        result = subprocess.run(
            [sys.executable, "-m", "clipmath", "search", "-s", str(store), "--expr", expression],
            capture_output=True, text=True, timeout=300, env=SRC_ENV,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error:") and "zero vector" in result.stderr
        assert "Traceback" not in result.stderr


def test_zero_query_over_http_is_a_400(tmp_path, image_folder, tiny_encoder):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from clipmath.retrieval import Retriever
    from clipmath.serve import ServeConfig, create_app

    store = tmp_path / "store"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    name = sorted(p.name for p in image_folder.iterdir())[0]
    app = create_app(Retriever(Gallery.open(store), tiny_encoder), ServeConfig())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.post("/api/search", json={"expression": f"+{name} -{name}"})
        assert answer.status_code == 400 and "zero vector" in answer.json()["detail"]
        assert client.post("/api/search", json={"expression": f"+{name}"}).status_code == 200


def test_zero_query_in_python_is_a_clipmath_error(tmp_path, image_folder, tiny_encoder):
    from clipmath.compose import build_query
    from clipmath.retrieval import Retriever

    store = tmp_path / "store"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    name = str(sorted(image_folder.iterdir())[0])
    retriever = Retriever(Gallery.open(store), tiny_encoder)
    with pytest.raises(ClipmathError, match="zero vector"):
        retriever.search([build_query(expression=f"+{name} -{name}")], method="expr")
