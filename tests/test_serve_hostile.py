"""The server under hostile input: one bad request among good ones fails alone; values JSON can carry (NaN,
Infinity, 1e400, lone surrogates) get a 4xx that serialises; decoded upload pixels are bounded; cross-site
requests are refused; any file name can be fetched; expression operands never come back in their own results."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from clipmath.compose import METHODS, MethodSpec  # noqa: E402
from clipmath.compose.text_only import TextOnly  # noqa: E402
from clipmath.errors import ClipmathError  # noqa: E402
from clipmath.serve import ServeConfig, create_app  # noqa: E402
from clipmath.serve.engine import SearchSpec  # noqa: E402
from clipmath.serve.errors import RequestError  # noqa: E402
from clipmath.serve.uploads import PixelBudget  # noqa: E402
from clipmath.store import index_folder  # noqa: E402
from tests.serve_support import copy_examples, open_retriever  # noqa: E402

BASE_URL = "http://127.0.0.1"
NAMES = ["skimage/chelsea.png", "skimage/coffee.png", "arithmetic/king2.jpg", "arithmetic/man2.jpg",
         "arithmetic/woman2.jpg", "coco/COCO_val2014_000000060623.jpg"]  # fmt: skip
NEWLINE_NAME = "odd\nname.png"
RAW_NAME = b"caf\xe9.png"  # not valid UTF-8


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    base = tmp_path_factory.mktemp("hostile_serve")
    root = base / "images"
    copy_examples(NAMES, root)
    Image.new("RGB", (40, 30), "green").save(root / NEWLINE_NAME)
    Image.new("RGB", (30, 40), "blue").save(os.fsdecode(os.fsencode(root) + b"/" + RAW_NAME))
    Image.new("L", (8000, 8000), 128).save(root / "huge.jpg", quality=50)  # 64 Mpixel: under the index limit
    report = index_folder(base / "store", root, tiny_encoder, progress=False)
    assert report.added == len(NAMES) + 3 and not report.bad
    return open_retriever(base / "store", tiny_encoder)


@pytest.fixture(scope="module")
def client(served):
    app = create_app(served, ServeConfig(default_k=5, max_k=20, max_pixels=1_000_000))
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def png(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- one request fails alone ------------------------------------------------------------------------------
class _Fragile(TextOnly):
    """A text method with a bug that only the text "boom" triggers (not a ClipmathError)."""

    name = "fragile"

    def compose(self, encoder, queries, batch_size=64):
        if any(q.text == "boom" for q in queries):
            raise RuntimeError("a bug only this query hits")
        return super().compose(encoder, queries, batch_size)


@pytest.fixture
def fragile_method():
    METHODS.register("fragile", MethodSpec("fragile", "text search with a bug", ("text",), _Fragile))
    yield "fragile"
    METHODS.unregister("fragile")


def test_a_failing_job_fails_alone_in_its_batch(served, fragile_method):
    app = create_app(served, ServeConfig())
    engine = app.state.engine
    texts = [f"photo {i}" for i in range(6)]
    with engine._refresh_lock:  # hold the worker: every job below lands in one batch
        good = [engine.search(SearchSpec(method="fragile", k=3, text=t)) for t in texts]
        bad = engine.search(SearchSpec(method="fragile", k=3, text="boom"))
        other = engine.search(SearchSpec(method="text", k=3, text="a dog"))
    assert all(len(f.result(timeout=60).hits) == 3 for f in good)
    assert len(other.result(timeout=60).hits) == 3
    with pytest.raises(RuntimeError, match="only this query"):
        bad.result(timeout=60)
    engine.stop()


def test_concurrent_http_requests_with_one_malformed_one(client):
    bodies = [{"text": f"query {i}", "k": 3} for i in range(10)]
    bodies.insert(4, {"expression": '+skimage/coffee.png -"bad \\x escape" +"\\u12"'})
    bodies.insert(7, {"expression": "+1e40*skimage/coffee.png"})
    statuses: list = [None] * len(bodies)

    def ask(i: int) -> None:
        statuses[i] = client.post("/api/search", json=bodies[i]).status_code

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses.count(200) == 10
    assert all(400 <= statuses[i] < 500 for i in (4, 7)), statuses


# ---- values JSON can carry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_lam_is_a_422_that_serialises(client, lam):
    body = '{"reference": {"gallery_id": "skimage/coffee.png"}, "source": "cat", "target": "dog", "lam": ' + lam + "}"
    response = client.post("/api/search", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "lam"


def test_lone_surrogates_never_make_a_500(client):
    for body in (
        {"text": "a cat \ud800 on a mat"},
        {"reference": {"gallery_id": "no\udcffsuch.png"}, "text": "x"},
        {"expression": '+"\udfff" -skimage/coffee.png'},
        {"text": "x", "method": "\ud83d"},
    ):
        raw = json.dumps(body).encode()  # ensure_ascii: the surrogates travel as \\u escapes
        response = client.post("/api/search", content=raw, headers={"content-type": "application/json"})
        assert response.status_code < 500, (body, response.text)
        json.loads(response.content)


def test_huge_expression_weights_are_refused(client):
    response = client.post("/api/search", json={"expression": '+1e40*"a cat"'})
    assert 400 <= response.status_code < 500


# ---- file names -----------------------------------------------------------------------------------------
def test_any_file_name_can_be_listed_searched_and_fetched(client):
    items = client.get("/api/items", params={"limit": 100}).json()["items"]
    by_id = {item["id"]: item for item in items}
    odd = os.fsdecode(RAW_NAME)
    assert NEWLINE_NAME in by_id and odd in by_id
    for item_id in (NEWLINE_NAME, odd):
        thumb = client.get(by_id[item_id]["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    original = client.get("/api/image/" + "odd%0Aname.png")
    assert original.status_code == 200 and Image.open(io.BytesIO(original.content)).size == (40, 30)
    raw = client.get("/api/image/caf%E9.png")
    assert raw.status_code == 200 and Image.open(io.BytesIO(raw.content)).size == (30, 40)
    hits = client.post("/api/search", json={"text": "blue", "k": 20}).json()["results"]
    assert odd in {hit["id"] for hit in hits}


def test_thumbnail_of_an_indexed_8000x8000_photo(client):
    response = client.get("/api/thumbnail/huge.jpg", params={"size": 64})
    assert response.status_code == 200  # even though this server takes uploads of at most 1 Mpixel
    assert max(Image.open(io.BytesIO(response.content)).size) == 64


def test_expression_operands_are_not_in_their_own_results(client):
    expression = "+arithmetic/king2.jpg -arithmetic/man2.jpg +arithmetic/woman2.jpg"
    body = client.post("/api/search", json={"expression": expression, "k": 20}).json()
    ids = {hit["id"] for hit in body["results"]}
    assert ids and not ids & {"arithmetic/king2.jpg", "arithmetic/man2.jpg", "arithmetic/woman2.jpg"}


# ---- cross-site ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_requests_are_refused(client, headers):
    upload = client.post("/api/uploads", files={"image": ("a.png", png(), "image/png")}, headers=headers)
    assert upload.status_code == 403 and "cross-site" in upload.json()["detail"]
    assert client.post("/api/search", json={"text": "x"}, headers=headers).status_code == 403


@pytest.mark.parametrize(
    "headers", [{}, {"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}]
)
def test_same_origin_and_non_browser_requests_pass(client, headers):
    assert client.post("/api/search", json={"text": "x"}, headers=headers).status_code == 200
    assert client.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # the page itself


# ---- upload pixel budget ------------------------------------------------------------------------------------
def test_pixel_budget_waits_then_refuses():
    budget = PixelBudget(limit=100, wait_seconds=0.1)

    async def scenario() -> list:
        events = []
        async with budget.hold(80):
            events.append(budget.in_flight)
            with pytest.raises(RequestError) as info:
                async with budget.hold(30):
                    pass
            events.append(info.value.status)
        async with budget.hold(30):  # room again once the first one is done
            events.append(budget.in_flight)
        return events

    assert asyncio.run(scenario()) == [80, 503, 30]
    assert budget.in_flight == 0 and budget.peak == 80 and budget.refused == 1


def test_one_upload_larger_than_the_budget_still_runs_alone():
    budget = PixelBudget(limit=10, wait_seconds=0.1)

    async def scenario() -> int:
        async with budget.hold(50):
            return budget.in_flight

    assert asyncio.run(scenario()) == 50


def test_uploads_share_the_budget_and_give_it_back(served):
    config = ServeConfig(max_pixels=200 * 200, upload_pixel_budget=200 * 200, upload_wait_seconds=20)
    with TestClient(create_app(served, config), base_url=BASE_URL) as small:
        budget = small.app.state.upload_budget
        statuses: list = []

        def send(i: int) -> None:
            data = png((200, 200), (i * 20, 10, 10))
            statuses.append(small.post("/api/uploads", files={"image": ("a.png", data, "image/png")}).status_code)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert statuses == [201] * 4
        assert budget.peak <= 200 * 200 and budget.in_flight == 0
        too_big = small.post("/api/uploads", files={"image": ("b.png", png((201, 200)), "image/png")})
        assert too_big.status_code == 413 and "too many pixels" in too_big.json()["detail"]


def test_config_refuses_a_budget_below_one_upload():
    with pytest.raises(ClipmathError, match="budget"):
        ServeConfig(max_pixels=1000, upload_pixel_budget=10).check()


def test_stored_vectors_are_untouched_by_requests(served, client):
    before = np.array(served.snapshot.vectors)
    client.post("/api/search", json={"text": "x"})
    np.testing.assert_array_equal(before, np.asarray(served.snapshot.vectors))


def test_a_file_name_that_is_not_utf8_works_as_a_reference(client):
    odd = os.fsdecode(RAW_NAME)
    bodies = (
        {"reference": {"gallery_id": odd}, "k": 20},
        {"reference": {"gallery_id": odd}, "text": "x"},
        {"expression": f'+{odd} +"x"', "k": 20},
    )  # an expression operand keeps the name's bytes too
    for body in bodies:
        raw = json.dumps(body).encode()  # the surrogate travels as a \\udce9 escape
        response = client.post("/api/search", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        ids = {hit["id"] for hit in response.json()["results"]}
        assert ids and odd not in ids  # found, and excluded from its own results
    too_long = client.post("/api/search", json={"reference": {"gallery_id": "x" * 1025}})
    assert too_long.status_code == 422
