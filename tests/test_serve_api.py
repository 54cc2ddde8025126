"""HTTP API of ``clipmath serve``: every endpoint, the safety rules, and serving while the store is re-indexed.

Plumbing tests run on the random ``tiny-random-clip`` (scores are checked against the encoder, not against
expectations of quality); the tests at the end use the real offline model when it is installed.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from clipmath.compose import METHODS, Composer, CompositionQuery, MethodSpec, get_composer  # noqa: E402
from clipmath.encoders import load_encoder  # noqa: E402
from clipmath.errors import ClipmathError, ModelLoadError  # noqa: E402
from clipmath.serve import BackgroundServer, CaptionSubject, FunctionCaptioner, ServeConfig, create_app  # noqa: E402
from clipmath.serve.engine import ImageKey, SearchSpec  # noqa: E402
from clipmath.store import Gallery, IndexConfig, index_folder  # noqa: E402
from tests.serve_support import EXAMPLES, FIRST, LATER, build_store, copy_examples, open_retriever  # noqa: E402

BASE_URL = "http://127.0.0.1"


# ---- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder(tiny_encoder):
    return tiny_encoder


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, encoder):
    """A store of 12 real photos, plus a symlink that points outside the image folder and a hidden file."""
    base = tmp_path_factory.mktemp("served")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((EXAMPLES / "skimage/coffee.png").read_bytes())
    root = base / "images"
    (root / "linked").mkdir(parents=True)
    os.symlink(outside / "secret.png", root / "linked" / "secret.png")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "unindexed.png").write_bytes((EXAMPLES / "skimage/chelsea.png").read_bytes())
    copy_examples(FIRST, root)
    store = base / "store"
    # followed on purpose: the server must still refuse to serve a file outside the image folder
    report = index_folder(store, root, encoder, IndexConfig(follow_symlinks=True), progress=False)
    assert report.added == len(FIRST) + 1 and not report.bad
    return store, root


@pytest.fixture(scope="module")
def retriever(gallery, encoder):
    return open_retriever(gallery[0], encoder)


@pytest.fixture(scope="module")
def app(retriever):
    return create_app(retriever, ServeConfig(default_k=5, max_k=20, max_upload_bytes=2_000_000))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def stored_vector(retriever, item_id: str) -> np.ndarray:
    return np.asarray(retriever.snapshot.vectors[retriever.snapshot.ids.index(item_id)])


def png_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_scores_match(retriever, query_vector: np.ndarray, results: list[dict]) -> None:
    """Every score is the cosine of the query with that item's stored vector, and ranks are ordered."""
    for hit in results:
        assert hit["score"] == pytest.approx(float(stored_vector(retriever, hit["id"]) @ query_vector), abs=1e-4)
    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True)
    assert [hit["rank"] for hit in results] == list(range(1, len(results) + 1))


# ---- health, info, schema -----------------------------------------------------------------------------
def test_health_reports_model_and_store_size(client, retriever):
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["model"] == retriever.encoder.info.label() and "RANDOM WEIGHTS" in body["model"]
    assert body["store_items"] == len(FIRST) + 1


def test_info_lists_methods_limits_and_store(client):
    body = client.get("/api/info").json()
    assert {"image", "text", "sum", "delta", "expr"} <= set(body["methods"])
    assert body["model_id"] == "tiny-random-clip" and body["pretrained"] is False and body["dim"] == 32
    assert (body["default_k"], body["max_k"], body["max_upload_bytes"]) == (5, 20, 2_000_000)
    assert body["store_items"] == len(FIRST) + 1
    assert body["captioning"] is None and body["token_required"] is False


def test_openapi_schema_documents_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/health",
        "/api/info",
        "/api/items",
        "/api/uploads",
        "/api/search",
        "/api/search/upload",
        "/api/thumbnail/{item_id}",
        "/api/image/{item_id}",
        "/api/caption",
        "/api/caption/difference",
    } <= paths
    search_fields = set(schema["components"]["schemas"]["SearchRequest"]["properties"])
    assert {"reference", "text", "source", "target", "lam", "expression", "method", "k"} == search_fields
    assert set(schema["components"]["schemas"]["Hit"]["properties"]) >= {"id", "path", "score", "thumbnail_url"}


# ---- search -------------------------------------------------------------------------------------------
def test_text_search_scores_are_the_encoders_cosines(client, retriever, encoder, gallery):
    body = client.post("/api/search", json={"text": "a cat on a sofa", "k": 4}).json()
    assert body["method"] == "text" and body["k"] == 4 and len(body["results"]) == 4
    assert_scores_match(retriever, encoder.encode_texts(["a cat on a sofa"])[0], body["results"])
    root = gallery[1].resolve()
    for hit in body["results"]:
        assert Path(hit["path"]).resolve() == (root / hit["id"]).resolve()
        assert hit["thumbnail_url"] == f"/api/thumbnail/{hit['id']}"
    steps = body["timings"]
    assert set(steps) == {"queue", "encode", "search"} and all(ms >= 0 for ms in steps.values())
    assert steps["encode"] + steps["search"] <= body["milliseconds"]  # parts of the request's own time


def test_default_k_applies(client):
    assert len(client.post("/api/search", json={"text": "a rocket"}).json()["results"]) == 5


def test_sum_with_gallery_reference_excludes_the_reference(client, retriever, encoder):
    reference = "skimage/chelsea.png"
    body = client.post("/api/search", json={"reference": {"gallery_id": reference}, "text": "as a dog", "k": 20}).json()
    assert body["method"] == "sum"
    ids = [hit["id"] for hit in body["results"]]
    assert reference not in ids and len(ids) == len(FIRST)  # everything but the reference
    query = CompositionQuery(reference=stored_vector(retriever, reference), text="as a dog")
    assert_scores_match(retriever, get_composer("sum").compose(encoder, [query])[0], body["results"])


def test_delta_uses_from_to_words_and_lambda(client, retriever, encoder):
    reference = "arithmetic/king2.jpg"
    request = {"reference": {"gallery_id": reference}, "source": "man", "target": "woman", "lam": 2.5, "k": 6}
    body = client.post("/api/search", json=request).json()
    assert body["method"] == "delta"
    query = CompositionQuery(reference=stored_vector(retriever, reference), source="man", target="woman", lam=2.5)
    assert_scores_match(retriever, get_composer("delta").compose(encoder, [query])[0], body["results"])
    weaker = client.post("/api/search", json={**request, "lam": 0.0}).json()
    assert [h["score"] for h in weaker["results"]] != [h["score"] for h in body["results"]]


def test_expression_over_gallery_ids_uploads_and_text(client, retriever, encoder):
    upload_id = client.post("/api/uploads", files={"image": ("red.png", png_bytes(), "image/png")}).json()["upload_id"]
    expression = f'+arithmetic/woman2.jpg +arithmetic/king2.jpg -arithmetic/man2.jpg +0.5*upload:{upload_id} -"a crown"'
    body = client.post("/api/search", json={"expression": expression, "k": 5}).json()
    assert body["method"] == "expr"
    terms = [
        stored_vector(retriever, "arithmetic/woman2.jpg"),
        stored_vector(retriever, "arithmetic/king2.jpg"),
        stored_vector(retriever, "arithmetic/man2.jpg"),
        encoder.encode_images([Image.open(io.BytesIO(png_bytes())).convert("RGB")])[0],
        encoder.encode_texts(["a crown"])[0],
    ]
    weights = np.array([1, 1, -1, 0.5, -1], dtype=np.float32)[:, None]
    combined = (weights * np.stack(terms)).sum(axis=0)
    assert_scores_match(retriever, combined / np.linalg.norm(combined), body["results"])


def test_explicit_method_overrides_inference(client, retriever):
    body = client.post(
        "/api/search",
        json={"reference": {"gallery_id": "skimage/rocket.jpg"}, "text": "at night", "method": "image", "k": 3},
    ).json()
    assert body["method"] == "image"
    assert_scores_match(retriever, stored_vector(retriever, "skimage/rocket.jpg"), body["results"])


# ---- uploads ------------------------------------------------------------------------------------------
def test_uploaded_copy_of_a_gallery_photo_finds_that_photo_first(client):
    data = (EXAMPLES / "skimage/chelsea.png").read_bytes()
    first = client.post("/api/uploads", files={"image": ("cat.png", data, "image/png")})
    assert first.status_code == 201
    upload = first.json()
    assert (upload["width"], upload["height"]) == Image.open(io.BytesIO(data)).size
    again = client.post("/api/uploads", files={"image": ("other-name.png", data, "image/png")}).json()
    assert again["upload_id"] == upload["upload_id"]  # content-addressed
    body = client.post("/api/search", json={"reference": {"upload_id": upload["upload_id"]}, "k": 3}).json()
    assert body["method"] == "image"
    assert body["results"][0]["id"] == "skimage/chelsea.png"
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_one_shot_upload_search_matches_upload_then_search(client):
    data = (EXAMPLES / "skimage/astronaut.png").read_bytes()
    one_shot = client.post(
        "/api/search/upload", files={"image": ("a.png", data, "image/png")}, data={"text": "in a garden", "k": "4"}
    )
    assert one_shot.status_code == 200, one_shot.text
    upload_id = client.post("/api/uploads", files={"image": ("a.png", data, "image/png")}).json()["upload_id"]
    two_step = client.post(
        "/api/search", json={"reference": {"upload_id": upload_id}, "text": "in a garden", "k": 4}
    ).json()
    assert one_shot.json()["method"] == "sum"
    assert [(h["id"], h["score"]) for h in one_shot.json()["results"]] == [
        (h["id"], h["score"]) for h in two_step["results"]
    ]


# ---- thumbnails, images, items ------------------------------------------------------------------------
def test_thumbnail_is_a_bounded_jpeg_and_is_cached(client, app):
    cache = app.state.thumbnails
    first = client.get("/api/thumbnail/skimage/astronaut.png", params={"size": 64})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "JPEG" and max(image.size) == 64
    hits = cache.hits
    second = client.get("/api/thumbnail/skimage/astronaut.png", params={"size": 64})
    assert second.content == first.content and cache.hits == hits + 1
    default = Image.open(io.BytesIO(client.get("/api/thumbnail/skimage/astronaut.png").content))
    assert max(default.size) == ServeConfig().thumbnail_size


def test_image_endpoint_returns_the_original_file(client, gallery):
    response = client.get("/api/image/coco/COCO_val2014_000000060623.jpg")
    assert response.status_code == 200
    assert response.content == (gallery[1] / "coco/COCO_val2014_000000060623.jpg").read_bytes()


def test_items_pages_and_filters(client):
    everything = client.get("/api/items", params={"limit": 500}).json()
    assert everything["total"] == len(FIRST) + 1
    assert sorted(item["id"] for item in everything["items"]) == sorted(FIRST + ["linked/secret.png"])
    page = client.get("/api/items", params={"offset": 2, "limit": 3}).json()
    assert [item["id"] for item in page["items"]] == [item["id"] for item in everything["items"][2:5]]
    coco = client.get("/api/items", params={"q": "COCO"}).json()
    assert coco["total"] == sum(name.startswith("coco/") for name in FIRST)
    assert all("coco" in item["id"].lower() for item in coco["items"])


def test_ids_with_url_special_characters_round_trip(tmp_path, encoder):
    """Through a real uvicorn: Starlette's TestClient decodes paths twice, so '%20' in a name would not survive."""
    root = tmp_path / "images"
    odd = "odd dir/a b #1 %20 ?x&y=ü.png"
    (root / "odd dir").mkdir(parents=True)
    (root / odd).write_bytes((EXAMPLES / "skimage/coffee.png").read_bytes())
    index_folder(tmp_path / "store", root, encoder, progress=False)
    app = create_app(open_retriever(tmp_path / "store", encoder))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as http:
        hit = http.post("/api/search", json={"text": "anything", "k": 1}).json()["results"][0]
        assert hit["id"] == odd
        assert http.get(hit["thumbnail_url"]).status_code == 200
        assert http.get(hit["image_url"]).content == (root / odd).read_bytes()
        listed = http.get("/api/items").json()["items"][0]
        assert listed["id"] == odd and http.get(listed["thumbnail_url"]).status_code == 200


def test_page_and_static_files_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>clipmath" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


# ---- bad input: always a 4xx with a message -----------------------------------------------------------
BAD_SEARCHES = [
    ({}, 400, "give a query"),
    ({"text": "x", "method": "nope"}, 400, "unknown method 'nope'"),
    ({"text": "x", "method": "sum"}, 400, "needs a reference image"),
    ({"reference": {"gallery_id": "skimage/coffee.png"}, "method": "sum"}, 400, "needs a modification text"),
    ({"reference": {"gallery_id": "skimage/coffee.png"}, "source": "cup"}, 400, "needs the 'target' text"),
    ({"method": "expr"}, 400, "needs an 'expression'"),
    ({"reference": {"gallery_id": "no/such.jpg"}, "text": "x"}, 404, "no image 'no/such.jpg'"),
    ({"reference": {"upload_id": "0" * 32}, "text": "x"}, 404, "upload the image again"),
    ({"expression": '+skimage/coffee.png -"unterminated'}, 400, "unterminated quote"),
    ({"expression": "+/etc/passwd"}, 404, "no image '/etc/passwd'"),
    ({"expression": "+../outside/secret.png"}, 404, "no image"),
    ({"expression": '0*"a" +0*"b"'}, 400, "every weight"),
    ({"text": "x", "k": 21}, 422, "limit of 20"),
]


@pytest.mark.parametrize(("request_body", "status", "message"), BAD_SEARCHES)
def test_bad_search_gets_a_clear_4xx(client, request_body, status, message):
    response = client.post("/api/search", json=request_body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


SCHEMA_VIOLATIONS = [
    {"text": "x", "k": 0},
    {"text": "x", "lam": 11},
    {"text": "x", "colour": "red"},
    {"reference": {"gallery_id": "a.jpg", "upload_id": "0" * 32}},
    {"reference": {}},
    {"reference": {"upload_id": "../../etc/passwd"}},
    {"text": "x" * 501},
]


@pytest.mark.parametrize("request_body", SCHEMA_VIOLATIONS)
def test_schema_violations_get_422_with_the_field(client, request_body):
    response = client.post("/api/search", json=request_body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_malformed_json_gets_422(client):
    response = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def truncated_jpeg() -> bytes:
    data = (EXAMPLES / "coco/COCO_val2014_000000060623.jpg").read_bytes()
    return data[: len(data) // 3]


BAD_UPLOADS = [
    (b"", 400, "empty"),
    (b"hello, not an image" * 10, 415, "not an image"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", 415, "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 415, "not an image"),
    (None, 422, "cannot decode"),  # truncated JPEG
]


@pytest.mark.parametrize(("data", "status", "message"), BAD_UPLOADS)
def test_bad_upload_gets_a_clear_4xx(client, data, status, message):
    data = truncated_jpeg() if data is None else data
    for path in ("/api/uploads", "/api/search/upload"):
        response = client.post(path, files={"image": ("file.jpg", data, "image/jpeg")})
        assert response.status_code == status, response.text
        assert message in response.json()["detail"]


def test_upload_without_a_file_gets_422(client):
    assert client.post("/api/uploads", data={"text": "x"}).status_code == 422


def test_upload_over_the_byte_limit_gets_413(retriever):
    big = (EXAMPLES / "skimage/astronaut.png").read_bytes()
    config = ServeConfig(max_upload_bytes=len(big) - 1)
    with TestClient(create_app(retriever, config), base_url=BASE_URL) as small:
        response = small.post("/api/uploads", files={"image": ("a.png", big, "image/png")})
        assert response.status_code == 413 and "limit" in response.json()["detail"]
        chunked = small.post(
            "/api/search",
            content=iter([b" " * 65536] * (len(big) // 65536 + 3)),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413  # no Content-Length: counted while streaming
        ok = small.post("/api/uploads", files={"image": ("s.png", png_bytes(), "image/png")})
        assert ok.status_code == 201


def test_upload_over_the_pixel_limit_gets_413(retriever):
    with TestClient(create_app(retriever, ServeConfig(max_pixels=100 * 100)), base_url=BASE_URL) as small:
        response = small.post("/api/uploads", files={"image": ("a.png", png_bytes((101, 100)), "image/png")})
        assert response.status_code == 413 and "too many pixels" in response.json()["detail"]
        fine = small.post("/api/uploads", files={"image": ("a.png", png_bytes((100, 100)), "image/png")})
        assert fine.status_code == 201


TRAVERSALS = [
    ("../../etc/passwd", 404),
    ("%2e%2e/%2e%2e/etc/passwd", 404),
    ("..%2F..%2Fetc%2Fpasswd", 404),
    ("/etc/passwd", 404),
    ("skimage/../../outside/secret.png", 404),
    (".hidden/unindexed.png", 404),  # inside the folder but not a committed gallery item
    ("linked/secret.png", 403),  # a gallery item whose symlink leaves the folder
]


@pytest.mark.parametrize(("item_id", "status"), TRAVERSALS)
@pytest.mark.parametrize("endpoint", ["thumbnail", "image"])
def test_only_committed_files_inside_the_image_folder_are_served(client, endpoint, item_id, status):
    response = client.get(f"/api/{endpoint}/{item_id}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()


def test_traversal_over_real_http_is_refused(retriever, gallery):
    """The same attempts as raw HTTP request lines to uvicorn (no client-side path normalisation)."""
    secret = (gallery[1].parent / "outside" / "secret.png").read_bytes()
    with BackgroundServer(create_app(retriever)) as server:
        for endpoint in ("thumbnail", "image"):
            for item_id, _ in TRAVERSALS + [("..%2f..%2foutside%2fsecret.png", 404), ("linked%2fsecret.png", 403)]:
                status, body = raw_get(server.port, f"/api/{endpoint}/{item_id}")
                assert 400 <= status < 500, (item_id, status)
                assert secret not in body and b"root:" not in body


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    return int(response.split(b" ", 2)[1]), response


def test_thumbnail_size_is_bounded(client):
    assert client.get("/api/thumbnail/skimage/coffee.png", params={"size": 8}).status_code == 422
    assert client.get("/api/thumbnail/skimage/coffee.png", params={"size": 5000}).status_code == 422


def test_deleted_gallery_file_gets_404(tmp_path, encoder):
    store, root = build_store(tmp_path, encoder, FIRST[:3])
    (root / FIRST[0]).unlink()
    with TestClient(create_app(open_retriever(store, encoder)), base_url=BASE_URL) as fresh:
        for endpoint in ("thumbnail", "image"):
            response = fresh.get(f"/api/{endpoint}/{FIRST[0]}")
            assert response.status_code == 404 and "gone" in response.json()["detail"]


def test_unknown_host_header_is_refused(client):
    """Bound to loopback, the server answers only loopback names (no DNS rebinding)."""
    assert client.get("/api/health", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/api/health", headers={"host": "[::1]:8000"}).status_code == 200


def test_app_serves_again_after_a_shutdown(retriever):
    app = create_app(retriever)
    for _ in range(2):
        with TestClient(app, base_url=BASE_URL) as fresh:
            assert fresh.post("/api/search", json={"text": "x", "k": 2}).status_code == 200


def test_unexpected_failure_is_a_bare_500_without_traceback(retriever, monkeypatch):
    app = create_app(retriever)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(retriever, "search", broken)
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as fresh:
        response = fresh.post("/api/search", json={"text": "x"})
    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "server's log" in response.json()["detail"]


# ---- token --------------------------------------------------------------------------------------------
TOKEN = "correct-horse-battery"


@pytest.fixture(scope="module")
def token_app(retriever):
    return create_app(retriever, ServeConfig(token=TOKEN))


@pytest.fixture(scope="module")
def token_client(token_app):
    with TestClient(token_app, base_url=BASE_URL) as test_client:
        yield test_client


API_CALLS = [
    ("get", "/api/health", {}),
    ("get", "/api/info", {}),
    ("get", "/api/items", {}),
    ("post", "/api/search", {"json": {"text": "x"}}),
    ("post", "/api/photos/search", {"json": {"text": "x"}}),
    ("post", "/api/photos/similar", {"json": {"reference": "skimage/coffee.png"}}),
    ("get", "/api/photos/controls", {}),
    ("get", "/api/photos/duplicates", {}),
    ("post", "/api/uploads", {"files": {"image": ("a.png", png_bytes(), "image/png")}}),
    ("post", "/api/search/upload", {"files": {"image": ("a.png", png_bytes(), "image/png")}}),
    ("get", "/api/thumbnail/skimage/coffee.png", {}),
    ("get", "/api/image/skimage/coffee.png", {}),
    ("get", "/api/video/skimage/coffee.png", {}),  # a gallery video (serve/media.py)
    ("post", "/api/caption", {"json": {"image": {"gallery_id": "skimage/coffee.png"}}}),
    (
        "post",
        "/api/caption/difference",
        {"json": {"before": {"gallery_id": "skimage/coffee.png"}, "after": {"gallery_id": "skimage/chelsea.png"}}},
    ),
    ("post", "/knn-service", {"json": {"text": "x"}}),  # clip-retrieval's API (serve/knn_service.py)
    ("get", "/indices-list", {}),
]


def test_every_api_route_is_covered_by_the_token_check_list(token_app):
    routes = {(method, path) for path, operations in token_app.openapi()["paths"].items() for method in operations}
    assert routes == {(method, path.replace("/skimage/coffee.png", "/{item_id}")) for method, path, _ in API_CALLS}


@pytest.mark.parametrize(("method", "path", "kwargs"), API_CALLS)
def test_token_is_checked_on_every_api_call(token_client, method, path, kwargs):
    call = getattr(token_client, method)
    missing = call(path, **kwargs)
    assert missing.status_code == 401 and "token" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert call(path, headers={"Authorization": "Bearer wrong-token-value"}, **kwargs).status_code == 401
    allowed = call(path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
    assert allowed.status_code != 401
    assert call(path, headers={"X-Clipmath-Token": TOKEN}, **kwargs).status_code == allowed.status_code


def test_token_cookie_lets_the_page_load_thumbnails(token_client):
    token_client.cookies.set("clipmath_token", TOKEN)
    try:
        assert token_client.get("/api/thumbnail/skimage/coffee.png").status_code == 200
    finally:
        token_client.cookies.clear()


def test_page_itself_needs_no_token(token_client):
    assert token_client.get("/").status_code == 200
    assert token_client.get("/static/app.js").status_code == 200
    assert token_client.get("/api/info").status_code == 401


def test_binding_beyond_loopback_requires_a_token(retriever):
    with pytest.raises(ClipmathError, match="token"):
        create_app(retriever, ServeConfig(host="0.0.0.0"))
    with pytest.raises(ClipmathError, match="too short"):
        ServeConfig(host="0.0.0.0", token="abc").check()
    ServeConfig(host="0.0.0.0", token=TOKEN).check()
    ServeConfig(host="::1").check()  # IPv6 loopback needs none


def test_cli_refuses_public_bind_without_token(gallery, monkeypatch):
    from typer.testing import CliRunner

    from clipmath.cli import app as cli_app

    monkeypatch.delenv("CLIPMATH_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", str(gallery[0]), "--host", "0.0.0.0"])
    assert isinstance(result.exception, ClipmathError) and "token" in str(result.exception)


def test_cli_refuses_a_busy_port_and_a_malformed_checkpoint(gallery):
    from typer.testing import CliRunner

    from clipmath.cli import app as cli_app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", str(gallery[0]), "--port", str(port)])
    assert isinstance(result.exception, ClipmathError) and f"cannot listen on 127.0.0.1:{port}" in str(result.exception)
    result = CliRunner().invoke(cli_app, ["serve", str(gallery[0]), "--checkpoint", "just-a-path.pt"])
    assert isinstance(result.exception, ClipmathError) and "METHOD=PATH" in str(result.exception)


# ---- captions -----------------------------------------------------------------------------------------
def test_caption_endpoints_answer_501_without_a_captioner(client):
    response = client.post("/api/caption", json={"image": {"gallery_id": "skimage/coffee.png"}})
    assert response.status_code == 501 and "not enabled" in response.json()["detail"]
    response = client.post(
        "/api/caption/difference",
        json={"before": {"gallery_id": "skimage/coffee.png"}, "after": {"gallery_id": "skimage/chelsea.png"}},
    )
    assert response.status_code == 501


def test_plugged_in_captioner_gets_vectors_and_images(retriever):
    seen: list[CaptionSubject] = []

    def caption(subjects):
        seen.extend(subjects)
        return [f"{s.label} {s.image.size[0]}x{s.image.size[1]}" for s in subjects]

    def difference(before, after):
        return f"{before.label} -> {after.label}: {float(before.vector @ after.vector):.3f}"

    captioner = FunctionCaptioner("test captioner", caption, difference)
    with TestClient(create_app(retriever, captioner=captioner), base_url=BASE_URL) as captioned:
        assert captioned.get("/api/info").json()["captioning"] == "test captioner"
        body = captioned.post("/api/caption", json={"image": {"gallery_id": "skimage/coffee.png"}}).json()
        size = Image.open(EXAMPLES / "skimage/coffee.png").size
        assert body == {"caption": f"skimage/coffee.png {size[0]}x{size[1]}", "captioner": "test captioner"}
        assert np.allclose(seen[-1].vector, stored_vector(retriever, "skimage/coffee.png"))
        uploaded = captioned.post("/api/uploads", files={"image": ("r.png", png_bytes(), "image/png")})
        upload_id = uploaded.json()["upload_id"]
        body = captioned.post("/api/caption", json={"image": {"upload_id": upload_id}}).json()
        assert body["caption"] == f"upload:{upload_id} 64x48"
        body = captioned.post(
            "/api/caption/difference",
            json={"before": {"gallery_id": "skimage/coffee.png"}, "after": {"gallery_id": "skimage/chelsea.png"}},
        ).json()
        cosine = float(stored_vector(retriever, "skimage/coffee.png") @ stored_vector(retriever, "skimage/chelsea.png"))
        assert body["caption"] == f"skimage/coffee.png -> skimage/chelsea.png: {cosine:.3f}"
        missing = captioned.post("/api/caption", json={"image": {"gallery_id": "nope.jpg"}})
        assert missing.status_code == 404

    without_difference = FunctionCaptioner("captions only", caption)
    with TestClient(create_app(retriever, captioner=without_difference), base_url=BASE_URL) as captioned:
        response = captioned.post(
            "/api/caption/difference",
            json={"before": {"gallery_id": "skimage/coffee.png"}, "after": {"gallery_id": "skimage/chelsea.png"}},
        )
        assert response.status_code == 501


# ---- learned methods ----------------------------------------------------------------------------------
class WeightedSum(Composer):
    """A stand-in learned method: ``w·reference + text`` with ``w`` read from its checkpoint file."""

    name = "weighted-sum"
    needs = ("reference", "text")

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def combine(self, embeddings):
        return self.weight * embeddings.reference + embeddings.text


def load_weighted_sum(encoder, checkpoint):
    try:
        return WeightedSum(json.loads(Path(checkpoint).read_text())["weight"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"bad checkpoint {checkpoint}: {exc}") from None


@pytest.fixture
def learned_method():
    spec = MethodSpec(
        "weighted-sum",
        "w·img + text (test stand-in)",
        ("reference", "text"),
        f"{__name__}:load_weighted_sum",
        learned=True,
        train_command="weighted-sum",
    )
    METHODS.register(spec.name, spec)
    yield spec
    METHODS.unregister(spec.name)


def test_learned_method_is_offered_only_with_its_checkpoint(retriever, encoder, learned_method, tmp_path):
    with TestClient(create_app(retriever), base_url=BASE_URL) as plain:
        assert "weighted-sum" not in plain.get("/api/info").json()["methods"]
        refused = plain.post(
            "/api/search",
            json={"reference": {"gallery_id": "skimage/coffee.png"}, "text": "tea", "method": "weighted-sum"},
        )
        assert refused.status_code == 400 and "--checkpoint METHOD=PATH" in refused.json()["detail"]
    checkpoint = tmp_path / "weights.json"
    checkpoint.write_text(json.dumps({"weight": 3.0}))
    config = ServeConfig(checkpoints={"weighted-sum": str(checkpoint)})
    with TestClient(create_app(retriever, config), base_url=BASE_URL) as learned:
        assert learned.get("/api/info").json()["methods"]["weighted-sum"] == "w·img + text (test stand-in)"
        body = learned.post(
            "/api/search",
            json={"reference": {"gallery_id": "skimage/coffee.png"}, "text": "tea", "method": "weighted-sum", "k": 5},
        ).json()
    query = 3.0 * stored_vector(retriever, "skimage/coffee.png") + encoder.encode_texts(["tea"])[0]
    assert_scores_match(retriever, query / np.linalg.norm(query), body["results"])


def test_bad_checkpoints_fail_at_start_up(retriever, learned_method, tmp_path):
    with pytest.raises(ClipmathError, match="not learned methods"):
        create_app(retriever, ServeConfig(checkpoints={"sum": "x.pt"}))
    with pytest.raises(ModelLoadError, match="bad checkpoint"):
        create_app(retriever, ServeConfig(checkpoints={"weighted-sum": str(tmp_path / "missing.json")}))


# ---- concurrency --------------------------------------------------------------------------------------
def test_waiting_searches_are_batched_and_a_bad_one_fails_alone(app, retriever, encoder):
    engine = app.state.engine
    texts = [f"photo number {i}" for i in range(8)]
    batches_before = engine.batches
    with engine._refresh_lock:  # hold the worker so that the jobs queue up
        futures = [engine.search(SearchSpec(method="text", k=3, text=text)) for text in texts]
        bad = engine.search(SearchSpec(method="sum", k=3, text="x", reference=ImageKey(gallery_id="missing.jpg")))
    outcomes = [future.result(timeout=60) for future in futures]
    with pytest.raises(ClipmathError, match="missing.jpg"):
        bad.result(timeout=60)
    assert engine.batches - batches_before <= 2  # one job may have been taken before the rest arrived
    vectors = encoder.encode_texts(texts)
    for outcome, vector in zip(outcomes, vectors):
        assert len(outcome.hits) == 3
        for hit in outcome.hits:
            assert hit.score == pytest.approx(float(stored_vector(retriever, hit.id) @ vector), abs=1e-4)


def test_concurrent_clients_get_the_same_answers_as_serial_ones(client):
    requests = [{"text": f"query {i}", "k": 4} for i in range(12)]
    serial = [client.post("/api/search", json=r).json()["results"] for r in requests]
    answers: list = [None] * len(requests)

    def ask(i: int) -> None:
        answers[i] = client.post("/api/search", json=requests[i]).json()["results"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for answer, expected in zip(answers, serial):  # batched encoding may differ in the last float bits
        assert [hit["id"] for hit in answer] == [hit["id"] for hit in expected]
        assert [hit["score"] for hit in answer] == pytest.approx([hit["score"] for hit in expected], abs=1e-5)


def test_reindexing_while_serving_every_answer_comes_from_one_committed_state(tmp_path, encoder):
    """Index 8 more photos (4 commits) while 4 clients search; each answer must match one committed state."""
    store, root = build_store(tmp_path, encoder, FIRST)
    texts = ["a street", "a bowl of food", "an animal", "people"]
    text_vectors = dict(zip(texts, encoder.encode_texts(texts)))
    indexing_done = threading.Event()
    answers: list[tuple[str, dict]] = []
    errors: list[str] = []

    with TestClient(create_app(open_retriever(store, encoder), ServeConfig(max_k=50)), base_url=BASE_URL) as live:

        def client_loop(text: str) -> None:
            rounds_after = 0
            for _ in range(200):
                response = live.post("/api/search", json={"text": text, "k": 50})
                if response.status_code != 200:
                    errors.append(response.text)
                    return
                answers.append((text, response.json()))
                if indexing_done.is_set():
                    rounds_after += 1
                    if rounds_after >= 2:
                        return

        clients = [threading.Thread(target=client_loop, args=(text,)) for text in texts]
        for thread in clients:
            thread.start()
        copy_examples(LATER, root)
        indexer = load_encoder("tiny-random-clip")  # its own encoder, like a separate `clipmath index` process
        report = index_folder(store, root, indexer, IndexConfig(commit_every=2), progress=False)
        indexing_done.set()
        for thread in clients:
            thread.join(timeout=300)
        assert report.added == len(LATER)
        final_items = live.get("/api/items", params={"limit": 500}).json()
        new_thumbnail = live.get(f"/api/thumbnail/{LATER[-1]}")

    assert not errors
    assert final_items["total"] == len(FIRST) + len(LATER) and new_thumbnail.status_code == 200
    final = Gallery.open(store).snapshot()
    commit_order = final.ids  # by vector row, i.e. in commit order
    vector_of = {item_id: np.asarray(final.vectors[row]) for row, item_id in enumerate(commit_order)}
    counts_seen = {body["store_items"] for _, body in answers}
    assert counts_seen <= {len(FIRST) + 2 * i for i in range(len(LATER) // 2 + 1)}
    assert len(FIRST) + len(LATER) in counts_seen  # the clients saw the finished index
    for text, body in answers:
        visible = set(commit_order[: body["store_items"]])
        ids = [hit["id"] for hit in body["results"]]
        assert len(ids) == body["store_items"] and set(ids) == visible  # k=50 > store: the whole state
        for hit in body["results"]:
            assert hit["score"] == pytest.approx(float(vector_of[hit["id"]] @ text_vectors[text]), abs=1e-4)


# ---- real offline model (runs once clipmath.encoders.offline is installed) -----------------------------
@pytest.fixture(scope="module")
def offline_client(tmp_path_factory, offline_encoder):
    store = tmp_path_factory.mktemp("offline") / "store"
    index_folder(store, EXAMPLES, offline_encoder, progress=False)
    with TestClient(create_app(open_retriever(store, offline_encoder)), base_url=BASE_URL) as test_client:
        yield test_client


def coco_photos_about(word: str) -> set[str]:
    """Gallery ids of the COCO photos whose human captions mention ``word`` (examples/captions.json)."""
    captions = json.loads((EXAMPLES.parent / "captions.json").read_text())
    return {
        f"coco/{name}"
        for name, entry in captions.items()
        if any(word in caption.lower().split() for caption in entry["captions"])
    }


def test_offline_model_text_search_finds_the_cat(offline_client):
    body = offline_client.post("/api/search", json={"text": "a photo of a cat", "k": 3}).json()
    assert "pretrained" in body["model"] and "RANDOM" not in body["model"]
    assert "skimage/chelsea.png" in [hit["id"] for hit in body["results"]]


def test_offline_model_upload_finds_its_gallery_copy(offline_client):
    data = (EXAMPLES / "skimage/rocket.jpg").read_bytes()
    body = offline_client.post(
        "/api/search/upload", files={"image": ("r.jpg", data, "image/jpeg")}, data={"method": "image", "k": 1}
    ).json()
    assert body["results"][0]["id"] == "skimage/rocket.jpg"


def test_offline_model_refinement_moves_results_toward_the_text(offline_client):
    """Cat photo + "coffee": the coffee cup must rank higher than with the cat photo alone."""
    reference = {"gallery_id": "skimage/chelsea.png"}
    alone = offline_client.post("/api/search", json={"reference": reference, "method": "image", "k": 31}).json()
    refined = offline_client.post(
        "/api/search", json={"reference": reference, "text": "a cup of coffee", "k": 31}
    ).json()

    def rank_of(body: dict, item_id: str) -> int:
        return [hit["id"] for hit in body["results"]].index(item_id)

    assert rank_of(refined, "skimage/coffee.png") < rank_of(alone, "skimage/coffee.png")
    assert json.dumps(refined).count("skimage/chelsea.png") == 0  # the reference is never its own result


def test_offline_model_delta_turns_the_cat_into_pizza(offline_client):
    """SIMAT delta on the cat photo: λ=0 finds cats, cat→pizza with λ=1 finds the pizza photos."""
    pizzas, cats = coco_photos_about("pizza"), coco_photos_about("cat")
    assert len(pizzas) >= 2 and len(cats) >= 2
    request = {"reference": {"gallery_id": "skimage/chelsea.png"}, "source": "cat", "target": "pizza", "k": 2}
    unchanged = offline_client.post("/api/search", json={**request, "lam": 0.0}).json()
    changed = offline_client.post("/api/search", json={**request, "lam": 1.0}).json()
    assert {hit["id"] for hit in unchanged["results"]} <= cats
    assert {hit["id"] for hit in changed["results"]} <= pizzas
