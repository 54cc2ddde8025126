"""clip-retrieval's back-end API on ``clipmath serve``: ``/knn-service`` (text, image, embedding queries; its JSON
shape, captions and urls of a store indexed from tar shards) and ``/indices-list``."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("webdataset")

from fastapi.testclient import TestClient  # noqa: E402

from clipmath.retrieval import Retriever  # noqa: E402
from clipmath.serve import ServeConfig, create_app  # noqa: E402
from clipmath.store import IndexConfig  # noqa: E402
from clipmath.store.shard_indexer import index_shards  # noqa: E402
from tests.conftest import write_images  # noqa: E402
from tests.test_shards import write_shards  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    base = tmp_path_factory.mktemp("knn")
    names = write_images(base / "images", 10, seed=2, size=(24, 24))
    shards = write_shards(base / "shards", base / "images", names, per_shard=5)
    index_shards(base / "store", shards, tiny_encoder, IndexConfig(), progress=False)
    retriever = Retriever(Retriever.open(base / "store").gallery, tiny_encoder)
    with TestClient(create_app(retriever, ServeConfig(default_k=5, max_k=8)), base_url="http://127.0.0.1") as client:
        yield client, retriever, base, names


def test_an_embedding_query_finds_its_item_first_with_caption_and_url(served):
    client, retriever, _, names = served
    snapshot = retriever.snapshot
    row = snapshot.row_of("00001/" + names[7].rsplit(".", 1)[0])
    response = client.post("/knn-service", json={"embedding_input": np.asarray(snapshot.vectors[row]).tolist(),
                                                 "num_images": 3, "modality": "image", "indice_name": "store",
                                                 "deduplicate": True, "use_safety_model": False})  # fmt: skip
    assert response.status_code == 200, response.text
    results = response.json()
    assert len(results) == 3 and results[0]["id"] == row and results[0]["similarity"] == pytest.approx(1, abs=1e-3)
    key = names[7].rsplit(".", 1)[0]
    assert results[0]["caption"] == f"a photo {key}" and results[0]["url"].endswith(names[7])
    assert results[0]["item_id"] == f"00001/{key}" and results[0]["image_path"].endswith(f"shards/00001/{key}")
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)


def test_text_and_image_queries_match_the_retrievers_own_search(served):
    client, retriever, base, names = served
    text = client.post("/knn-service", json={"text": "a red square", "num_images": 4}).json()
    expected = retriever.search_vectors(retriever.encoder.encode_texts(["a red square"]), 4)[1][0]
    assert [r["item_id"] for r in text] == [h.id for h in expected]
    image = base64.b64encode((base / "images" / names[2]).read_bytes()).decode()
    found = client.post("/knn-service", json={"image": image, "num_images": 1}).json()
    assert found[0]["item_id"] == "00000/" + names[2].rsplit(".", 1)[0]
    assert client.get("/indices-list").json() == ["store"]


@pytest.mark.parametrize(
    "body, status",
    [
        ({"text": "x", "modality": "text"}, 400),
        ({"text": "x", "embedding_input": [0.0] * 32}, 400),
        ({"image_url": "http://127.0.0.1/x.jpg"}, 400),
        ({"embedding_input": [1.0, 2.0]}, 400),
        ({"image": "not base64!"}, 400),
        ({"text": "x", "num_images": 9}, 422),
        ({"text": "x", "indice_name": "other"}, 400),
    ],
)
def test_requests_it_cannot_answer_get_a_one_line_reason(served, body, status):
    response = served[0].post("/knn-service", json=body)
    assert response.status_code == status and response.json()["detail"]
