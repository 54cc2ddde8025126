"""Each compose method against hand-computed vectors, and the expression parser."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from clipmath.compose import (
    CompositionQuery,
    Term,
    available_methods,
    delta,
    elementwise_sum,
    get_composer,
    image_only,
    parse_expression,
    text_only,
    weighted_sum,
)
from clipmath.errors import ComposeError


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


class TableEncoder:
    """A test double with the encoder's text interface: each text maps to a fixed vector."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dim = len(next(iter(table.values())))
        self.text_calls = 0

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        self.text_calls += 1
        return np.stack([unit(*self.table[t]) for t in texts])


def test_pure_functions_match_hand_computation():
    img, txt = np.array([[3.0, 4.0, 0.0]]), np.array([[0.0, 0.0, 2.0]])
    np.testing.assert_allclose(image_only(img), [[0.6, 0.8, 0.0]], atol=1e-6)
    np.testing.assert_allclose(text_only(txt), [[0.0, 0.0, 1.0]], atol=1e-6)
    # normalize(normalize(img) + normalize(txt)) = (0.6, 0.8, 1) / sqrt(2)
    np.testing.assert_allclose(elementwise_sum(img, txt), [[0.6 / 2**0.5, 0.8 / 2**0.5, 1 / 2**0.5]], atol=1e-6)
    src, tgt = np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 2.0, 0.0]])
    # (0.6, 0.8, 0) + 0.5 * ((0, 1, 0) - (1, 0, 0)) = (0.1, 1.3, 0)
    np.testing.assert_allclose(delta(img, src, tgt, 0.5), [[0.1, 1.3, 0.0]], atol=1e-6)
    np.testing.assert_allclose(delta(img, src, tgt, np.array([0.0])), [[0.6, 0.8, 0.0]], atol=1e-6)
    # 1*(1,0) - 1*(0,1) + 2*(1,0) normalised -> (3, -1)/sqrt(10)
    vectors = np.array([[5.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    np.testing.assert_allclose(weighted_sum(vectors, [1, -1, 2]), [3 / 10**0.5, -1 / 10**0.5], atol=1e-6)


def test_composers_gather_inputs_and_normalise():
    table = {"ref": [1, 0, 0], "red": [0, 1, 0], "cat": [0, 0, 1], "dog": [0, 1, 1]}
    encoder = TableEncoder({k: np.array(v, dtype=np.float32) for k, v in table.items()})
    ref = np.array([1.0, 0.0, 0.0], dtype=np.float32)  # a precomputed embedding is used as given
    query = CompositionQuery(reference=ref, text="red", source="cat", target="dog", lam=1.0)
    got_sum = get_composer("sum").compose(encoder, [query])
    np.testing.assert_allclose(got_sum, [[1 / 2**0.5, 1 / 2**0.5, 0]], atol=1e-6)
    got_delta = get_composer("delta").compose(encoder, [query])
    expected = np.array([1, 0, 0]) + (unit(0, 1, 1) - np.array([0, 0, 1]))
    np.testing.assert_allclose(got_delta[0], expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(get_composer("image").compose(encoder, [query]), [[1, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(get_composer("text").compose(encoder, [query]), [[0, 1, 0]], atol=1e-6)
    assert np.allclose(np.linalg.norm(got_delta, axis=1), 1.0)


def test_expression_composer_batches_queries():
    table = {"king": [1, 1, 0], "man": [1, 0, 0], "woman": [0, 0, 1]}
    encoder = TableEncoder({k: np.array(v, dtype=np.float32) for k, v in table.items()})
    queries = [
        CompositionQuery(terms=[Term(1, text="king"), Term(-1, text="man"), Term(1, text="woman")]),
        CompositionQuery(terms=[Term(2, text="woman")]),
    ]
    got = get_composer("expr").compose(encoder, queries)
    expected = unit(1, 1, 0) - np.array([1, 0, 0]) + np.array([0, 0, 1])
    np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(got[1], [0, 0, 1], atol=1e-6)
    assert encoder.text_calls == 1  # all texts of all queries in one batch


def test_missing_inputs_are_named():
    encoder = TableEncoder({"x": np.ones(3, dtype=np.float32)})
    with pytest.raises(ComposeError, match="needs --text"):
        get_composer("sum").compose(encoder, [CompositionQuery(reference=np.ones(3, dtype=np.float32))])
    with pytest.raises(ComposeError, match="needs --from"):
        get_composer("delta").compose(encoder, [CompositionQuery(reference=np.ones(3, dtype=np.float32), target="x")])
    with pytest.raises(ComposeError, match="needs --expr"):
        get_composer("expr").compose(encoder, [CompositionQuery(text="x")])
    with pytest.raises(ComposeError, match="dimension 2"):
        get_composer("image").compose(encoder, [CompositionQuery(reference=np.ones(2, dtype=np.float32))])
    with pytest.raises(ComposeError, match="image not found"):
        get_composer("image").compose(encoder, [CompositionQuery(reference="/no/such/file.jpg")])


def test_parse_expression_terms_and_weights():
    terms = parse_expression("+woman.jpg king.jpg -man.jpg +0.5*\"a red car\" -2*'dog' 1.5*dir/x.png")
    assert [(t.weight, t.image, t.text) for t in terms] == [
        (1.0, "woman.jpg", None),
        (1.0, "king.jpg", None),
        (-1.0, "man.jpg", None),
        (0.5, None, "a red car"),
        (-2.0, None, "dog"),
        (1.5, "dir/x.png", None),
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty expression"),
        ('+a.jpg -"unterminated', "unterminated quote"),
        ('+""', "empty text"),
        ("0*a.jpg", "every weight"),
    ],
)
def test_parse_expression_errors(expression, message):
    with pytest.raises(ComposeError, match=message):
        parse_expression(expression)


def test_registry_lists_and_rejects():
    assert {"image", "text", "sum", "delta", "expr"} <= set(available_methods())
    with pytest.raises(ComposeError, match="unknown method 'nope'"):
        get_composer("nope")
    with pytest.raises(ComposeError, match="takes no checkpoint"):
        get_composer("sum", checkpoint="x.safetensors")
