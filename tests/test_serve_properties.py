"""Property-based tests of the HTTP API: whatever JSON a client sends, the answer is never a 500, always JSON that
parses, and the server keeps answering (bounded in examples and time)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from clipmath.serve import FunctionCaptioner, ServeConfig, create_app  # noqa: E402
from tests.serve_support import build_store, open_retriever  # noqa: E402

BASE_URL = "http://127.0.0.1"
NAMES = ["skimage/coffee.png", "arithmetic/king2.jpg", "arithmetic/man2.jpg"]
BOUNDED = settings(
    max_examples=60,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

#: Text as JSON can carry it: any code point, lone surrogates included.
texts = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e400, -1e400, 1e-400, 10**400]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8
)
ids = st.one_of(st.sampled_from(NAMES + ["../outside.png", "/etc/passwd", "x\ny.png", "\udcff.png"]), texts)
operands = st.one_of(
    ids.map(lambda name: name.replace(" ", "")),
    texts.map(lambda text: json.dumps(text)[1:-1]).map(lambda text: f'"{text}"'),
    st.sampled_from(["upload:" + "0" * 32, '"unterminated', "\\x", "1e40*", "+", "-", "*"]),
)
expressions = st.lists(
    st.tuples(st.sampled_from(["+", "-", " +", ""]), st.one_of(st.none(), numbers.map(str)), operands), max_size=4
).map(lambda terms: " ".join(f"{sign}{w + '*' if w else ''}{op}" for sign, w, op in terms))
images = st.one_of(
    st.fixed_dictionaries({"gallery_id": ids}),
    st.fixed_dictionaries({"upload_id": st.one_of(texts, st.just("0" * 32))}),
    json_values,
)
search_bodies = st.fixed_dictionaries(
    {},
    optional={
        "reference": images,
        "text": st.one_of(texts, json_values),
        "source": texts,
        "target": texts,
        "lam": st.one_of(numbers, json_values),
        "expression": st.one_of(expressions, json_values),
        "method": st.one_of(st.sampled_from(["sum", "text", "image", "delta", "expr", "combiner"]), texts),
        "k": st.one_of(numbers, json_values),
    },
)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_encoder):
    store, _ = build_store(tmp_path_factory.mktemp("props"), tiny_encoder, NAMES)
    captioner = FunctionCaptioner("toy", lambda subjects: ["a photo"] * len(subjects), lambda before, after: "moved")
    app = create_app(open_retriever(store, tiny_encoder), ServeConfig(default_k=3, max_k=10), captioner=captioner)
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as test_client:
        yield test_client


def _post(client, path: str, body: object):
    raw = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity literals, surrogates as \u escapes
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body, response.status_code, response.text)
    json.loads(response.content)  # the answer itself always serialised
    return response


@BOUNDED
@given(body=search_bodies)
def test_any_search_body_gets_an_answer_that_is_not_a_500(client, body):
    response = _post(client, "/api/search", body)
    if response.status_code == 200:
        assert len(response.json()["results"]) <= 10


@BOUNDED
@given(body=st.one_of(json_values, st.fixed_dictionaries({"image": images})))
def test_any_caption_body_gets_an_answer_that_is_not_a_500(client, body):
    _post(client, "/api/caption", body)


@BOUNDED
@given(body=st.one_of(json_values, st.fixed_dictionaries({"before": images, "after": images})))
def test_any_difference_body_gets_an_answer_that_is_not_a_500(client, body):
    _post(client, "/api/caption/difference", body)


@settings(max_examples=40, deadline=2000, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item_id=st.one_of(ids, texts), size=st.one_of(st.none(), st.integers(-10, 5000)))
def test_any_thumbnail_path_gets_an_answer_that_is_not_a_500(client, item_id, size):
    from clipmath.serve.app import item_url

    params = {} if size is None else {"size": size}
    response = client.get(item_url("thumbnail", item_id), params=params)
    assert response.status_code < 500, (item_id, response.text)
    assert client.get("/api/health").status_code == 200  # still serving
