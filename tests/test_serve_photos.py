"""The photo-library routes of the HTTP API: query controls, photo metadata in results, "more like this"."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from clipmath.retrieval import Retriever  # noqa: E402
from clipmath.serve import ServeConfig, create_app  # noqa: E402
from clipmath.store import Gallery, index_folder  # noqa: E402
from tests.test_photo_metadata import photo_folder  # noqa: E402,F401 - shared fixture


@pytest.fixture
def client(tmp_path, photo_folder, tiny_encoder):  # noqa: F811
    index_folder(tmp_path / "s", photo_folder, tiny_encoder, progress=False)
    app = create_app(Retriever(Gallery.open(tmp_path / "s"), tiny_encoder), ServeConfig())
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_photo_search_applies_the_controls_and_shows_metadata(client):
    body = {"text": "a photo", "k": 5, "controls": {"camera": "iphone"}}
    page = client.post("/api/photos/search", json=body).json()
    assert [r["id"] for r in page["results"]] == ["2023/x/dog.jpg"] and page["exhausted"] and page["complete"]
    assert page["results"][0]["photo"]["taken"] == "2023-01-02T08:00:00" and "random" in page["model"]
    dated = client.post("/api/photos/search", json={"text": "a photo", "controls": {"sort": "date"}}).json()
    assert [r["id"] for r in dated["results"]] == ["2023/x/dog.jpg", "plain.png", "2019/beach.jpg"]
    second = client.post("/api/photos/search", json={"text": "a photo", "k": 1, "controls": {"offset": 1}}).json()
    everything = client.post("/api/photos/search", json={"text": "a photo", "k": 3}).json()
    assert second["results"][0]["id"] == everything["results"][1]["id"] and second["results"][0]["rank"] == 2
    cut = everything["results"][1]["score"]
    above = client.post("/api/photos/search", json={"text": "a photo", "controls": {"min_score": cut}}).json()
    assert all(r["score"] >= cut for r in above["results"]) and len(above["results"]) == 2


def test_negative_terms_go_through_the_expression_engine(client):
    body = {"expression": '+2019/beach.jpg -"people"', "k": 2}
    page = client.post("/api/photos/search", json=body).json()
    assert page["method"] == "expr" and "2019/beach.jpg" not in [r["id"] for r in page["results"]]


def test_more_like_this_uses_the_stored_vector(client, tiny_encoder, monkeypatch):
    for name in ("encode_images", "encode_files"):  # the encoder must not be asked to encode
        monkeypatch.setattr(tiny_encoder, name, lambda *a, **k: pytest.fail("re-encoded a stored image"), raising=False)
    page = client.post("/api/photos/similar", json={"reference": "plain.png", "k": 5}).json()
    assert (
        page["method"] == "image"
        and len(page["results"]) == 2
        and "plain.png" not in [r["id"] for r in page["results"]]
    )
    assert client.post("/api/photos/similar", json={"reference": "nope.jpg"}).status_code == 404


def test_bad_controls_are_one_message(client):
    answer = client.post("/api/photos/search", json={"text": "x", "controls": {"after": "yesterday"}})
    assert answer.status_code == 422 and "'after'" in answer.json()["detail"]
    answer = client.post("/api/photos/search", json={"text": "x", "controls": {"colour": "red"}})
    assert answer.status_code == 422 and "unknown control 'colour'" in answer.json()["detail"]
