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


def test_the_controls_are_described_from_the_dataclass(client):
    from dataclasses import fields

    from clipmath.store.filters import QueryControls

    described = {c["name"]: c for c in client.get("/api/photos/controls").json()}
    assert list(described) == [f.name for f in fields(QueryControls)]
    assert described["sort"]["choices"] == ["score", "date"] and described["sort"]["default"] == "score"
    assert described["min_score"] == {**described["min_score"], "type": "number", "minimum": -1, "maximum": 1}
    assert described["min_size"]["type"] == "integer" and described["min_size"]["optional"]
    assert described["after"]["type"] == "string" and "date" in described["after"]["help"]


def test_the_distribution_is_the_deeper_list_before_the_cutoff(client):
    everything = client.post("/api/photos/search", json={"text": "a photo", "k": 3}).json()
    cut = everything["results"][1]["score"]
    body = {"text": "a photo", "k": 3, "controls": {"min_score": cut, "sort": "date"}, "distribution": 3}
    page = client.post("/api/photos/search", json=body).json()
    assert page["distribution"] == pytest.approx([r["score"] for r in everything["results"]], abs=1e-5)
    assert len(page["results"]) == 2 and page["store_items"] == 3


def test_an_uploaded_reference_works_with_the_controls(client, photo_folder):  # noqa: F811
    data = (photo_folder / "2019/beach.jpg").read_bytes()
    upload = client.post("/api/uploads", files={"image": ("b.jpg", data, "image/jpeg")}).json()
    ref = {"upload_id": upload["upload_id"]}
    page = client.post("/api/photos/search", json={"reference": ref, "k": 3}).json()
    assert page["method"] == "image" and page["results"][0]["id"] == "2019/beach.jpg"  # the copy finds its original
    assert page["results"][0]["score"] > 0.999
    filtered = client.post("/api/photos/search", json={"reference": ref, "controls": {"folder": "2023"}}).json()
    assert [r["id"] for r in filtered["results"]] == ["2023/x/dog.jpg"]
    expression = f'+upload:{upload["upload_id"]} -"people"'
    assert client.post("/api/photos/search", json={"expression": expression}).json()["method"] == "expr"
    gone = client.post("/api/photos/search", json={"reference": {"upload_id": "0" * 32}})
    assert gone.status_code == 404 and "upload the image again" in gone.json()["detail"]
    named = client.post("/api/photos/search", json={"reference": f"upload:{upload['upload_id']}"})
    assert named.status_code == 404  # a string reference is a gallery id, never an upload


def test_only_gallery_ids_and_uploads_are_image_operands(client, photo_folder):  # noqa: F811
    outside = str(photo_folder / "2019/beach.jpg")  # a real file on the server, named by its path: not read
    for body in ({"reference": outside}, {"expression": f"+{outside}"}):
        answer = client.post("/api/photos/search", json=body)
        assert answer.status_code == 404 and "no image" in answer.json()["detail"]


def test_a_negative_term_subtracts_the_text_with_the_weight_of_a_positive_one(client):
    def scores(body: dict) -> dict[str, float]:
        return {r["id"]: r["score"] for r in client.post("/api/photos/search", json={**body, "k": 3}).json()["results"]}

    image = scores({"reference": "plain.png", "method": "image"})
    people = scores({"text": "people"})
    both = client.post("/api/photos/search", json={"expression": '+plain.png -"people"', "k": 3}).json()["results"]
    expected = sorted(image, key=lambda i: image[i] - people[i], reverse=True)
    assert [r["id"] for r in both] == expected  # ranked by s(image) - s("people"): weight 1 on both terms
    most_people = max(image, key=lambda i: people[i])
    before, after = sorted(image, key=image.get, reverse=True).index(most_people), expected.index(most_people)
    assert after >= before  # the photo most like the negative text never moves up


def test_delta_and_learned_methods_are_checked_like_the_search_route(client):
    body = {"reference": "plain.png", "source": "green", "target": "blue", "k": 2}
    assert client.post("/api/photos/search", json=body).json()["method"] == "delta"
    answer = client.post("/api/photos/search", json={"text": "x", "method": "nope"})
    assert answer.status_code == 400 and "available:" in answer.json()["detail"]
    answer = client.post("/api/photos/search", json={"text": "x", "k": 101})  # the server's --max-k (100)
    assert answer.status_code == 422 and "limit of 100" in answer.json()["detail"]


def test_duplicates_route_groups_copies_and_suggests_the_best(tmp_path, photo_folder, tiny_encoder):  # noqa: F811
    from PIL import Image

    with Image.open(photo_folder / "2019/beach.jpg") as image:
        image.resize((32, 24)).save(photo_folder / "2019/beach-small.jpg", quality=95)
    index_folder(tmp_path / "d", photo_folder, tiny_encoder, progress=False)
    app = create_app(Retriever(Gallery.open(tmp_path / "d"), tiny_encoder), ServeConfig())
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        page = test_client.get("/api/photos/duplicates", params={"threshold": 0.95}).json()
        assert page["store_items"] == 4 and page["total"] >= 1
        group = next(g for g in page["groups"] if "2019/beach.jpg" in g["ids"])
        assert group["best"] == "2019/beach.jpg" and "2019/beach-small.jpg" in group["ids"]  # more pixels: the best
        assert group["photos"]["2019/beach.jpg"]["width"] == 64 and group["thumbnail_urls"][group["best"]]
        refused = test_client.get("/api/photos/duplicates", params={"threshold": 2})
        assert refused.status_code == 422 and "'threshold' must be at most 1.0" in refused.json()["detail"]
        assert test_client.get("/api/photos/duplicates", params={"probes": 0}).status_code == 422
        again = test_client.get("/api/photos/duplicates", params={"threshold": 0.95}).json()
        assert again["groups"] == page["groups"]  # the same join, kept for the next page
    assert (photo_folder / "2019/beach-small.jpg").exists()  # nothing deleted


def test_photo_pages_are_made_on_the_engines_model_thread(tmp_path, photo_folder, tiny_encoder, monkeypatch):  # noqa: F811
    """All model work of the server runs on one worker thread; the photo routes queue theirs there too."""
    import threading

    index_folder(tmp_path / "t", photo_folder, tiny_encoder, progress=False)
    retriever = Retriever(Gallery.open(tmp_path / "t"), tiny_encoder)
    threads = []
    real = retriever.search_page
    monkeypatch.setattr(retriever, "search_page", lambda *a, **k: threads.append(threading.current_thread().name)
                        or real(*a, **k))  # fmt: skip
    with TestClient(create_app(retriever, ServeConfig()), base_url="http://127.0.0.1") as test_client:
        found = test_client.post("/api/photos/search", json={"text": "a photo", "k": 2, "distribution": 3})
        similar = test_client.post("/api/photos/similar", json={"reference": "plain.png", "k": 2})
        bad = test_client.post("/api/photos/search", json={"text": "a photo", "controls": {"after": "yesterday"}})
    assert found.status_code == 200 and similar.status_code == 200 and bad.status_code == 422
    assert threads and set(threads) == {"clipmath-serve-engine"}
