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
    with pytest.raises(ComposeError, match="needs a modification text \\('text'\\)"):
        get_composer("sum").compose(encoder, [CompositionQuery(reference=np.ones(3, dtype=np.float32))])
    with pytest.raises(ComposeError, match="needs the 'source' text"):
        get_composer("delta").compose(encoder, [CompositionQuery(reference=np.ones(3, dtype=np.float32), target="x")])
    with pytest.raises(ComposeError, match="needs an 'expression'"):
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


# ---- the method registry ------------------------------------------------------------------------------------
def test_builtin_specs_agree_with_their_composers_and_checkpoints():
    import importlib

    from clipmath.compose import METHODS, learned_methods, zero_shot_methods

    assert zero_shot_methods() == ["image", "text", "sum", "delta", "expr", "cirevl", "ldre", "seize", "pdv"]
    assert learned_methods() == ["combiner", "adapted-delta", "searle", "oti", "lincir"]
    for spec in METHODS.list():
        if spec.learned:
            module = importlib.import_module(spec.build.split(":")[0])
            kinds = {getattr(module, n) for n in ("KIND", "PHI_KIND", "OTI_KIND") if hasattr(module, n)}
            assert kinds and spec.train_command
            continue
        composer = get_composer(spec.name)
        assert composer.name == spec.name and tuple(composer.needs) == spec.needs
    assert METHODS.get("adapted-delta").needs == get_composer("delta").needs  # AdaptedDelta inherits Delta's


def test_missing_checkpoint_names_the_field_and_the_train_command():
    with pytest.raises(ComposeError, match=r"needs a checkpoint \(train one with `clipmath train adapter`\)") as info:
        get_composer("adapted-delta")
    assert info.value.field == "checkpoint" and "--" not in str(info.value)
    with pytest.raises(ComposeError, match="did you mean 'combiner'"):
        get_composer("combner")


def test_missing_inputs_name_fields_not_flags():
    encoder = TableEncoder({"x": np.ones(3, dtype=np.float32)})
    cases = [
        ("sum", CompositionQuery(reference=np.ones(3, dtype=np.float32)), "text"),
        ("delta", CompositionQuery(reference=np.ones(3, dtype=np.float32), target="x"), "source"),
        ("delta", CompositionQuery(reference=np.ones(3, dtype=np.float32), source="x"), "target"),
        ("image", CompositionQuery(text="x"), "reference"),
        ("expr", CompositionQuery(text="x"), "expression"),
    ]
    for method, query, field in cases:
        with pytest.raises(ComposeError) as info:
            get_composer(method).compose(encoder, [query])
        assert info.value.field == field and f"'{field}'" in str(info.value) and "--" not in str(info.value)


# ---- one query builder and one method rule ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "method"),
    [
        ({"expression": "+a.jpg", "reference": "r.jpg", "text": "t"}, "expr"),
        ({"reference": "r.jpg", "source": "cat", "target": "dog"}, "delta"),
        ({"reference": "r.jpg", "target": "dog"}, "delta"),  # incomplete: delta then names the missing 'source'
        ({"reference": "r.jpg", "text": "red"}, "sum"),
        ({"reference": np.ones(3), "text": "red"}, "sum"),
        ({"reference": "r.jpg", "text": ""}, "image"),
        ({"text": "red"}, "text"),
        ({"expression": "", "text": "red"}, "text"),
    ],
)
def test_infer_method(fields, method):
    from clipmath.compose import infer_method

    assert infer_method(**fields) == method


def test_infer_method_without_a_query_names_no_flag():
    from clipmath.compose import infer_method

    with pytest.raises(ComposeError, match="give a query") as info:
        infer_method(text="")
    assert "--" not in str(info.value)


def test_build_query_parses_validates_and_resolves():
    from clipmath.compose import build_query

    query = build_query(reference="r.jpg", text="red", lam=0.5)
    assert (query.reference, query.text, query.lam, query.terms) == ("r.jpg", "red", 0.5, [])
    stored = {"a.png": np.ones(3, dtype=np.float32)}

    def resolve(name):
        return (stored[name], name) if name in stored else (np.zeros(3, dtype=np.float32), None)

    built = build_query(expression='+a.png -upload:xyz +"a dog"', reference="a.png", resolve_image=resolve)
    assert built.reference_id == "a.png" and np.array_equal(built.reference, stored["a.png"])
    assert [(t.weight, t.image_id, t.text) for t in built.terms] == [
        (1.0, "a.png", None),
        (-1.0, None, None),
        (1.0, None, "a dog"),
    ]
    assert isinstance(built.terms[0].image, np.ndarray)


# ---- hostile values (issue 11) --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, "1e400", 10**400, "x", None, True]
)
def test_lam_must_be_a_sane_number(bad):
    from clipmath.compose import build_query

    with pytest.raises(ComposeError, match="'lam'") as info:
        build_query(reference="r.jpg", source="a", target="b", lam=bad)
    assert info.value.field == "lam" and "\n" not in str(info.value)
    with pytest.raises(ComposeError, match="'lam'"):
        CompositionQuery(reference="r.jpg", lam=bad)


def test_weights_within_the_bound_are_kept():
    from clipmath.compose import MAX_WEIGHT

    assert CompositionQuery(lam=-MAX_WEIGHT).lam == -MAX_WEIGHT and CompositionQuery(lam=0).lam == 0.0
    assert [t.weight for t in parse_expression(f"{MAX_WEIGHT:g}*a.jpg -2.5e1*b.jpg")] == [MAX_WEIGHT, -25.0]


@pytest.mark.parametrize("expression", ["1e40*a.jpg", "+1e400*'x'", "-9999999999*a.jpg", "1" + "0" * 400 + "*a.jpg"])
def test_expression_weights_must_be_sane(expression):
    with pytest.raises(ComposeError, match="weight") as info:
        parse_expression(expression)
    assert info.value.field == "expression"
    with pytest.raises(ComposeError, match="'weight'"):
        Term(float("nan"), text="x")


def test_lone_surrogates_are_replaced_not_crashed_on():
    query = CompositionQuery(text="red\ud800", source="\udfffcat", target="dog")
    assert query.text == "red\ufffd" and query.source == "\ufffdcat"
    assert CompositionQuery(text="\ud83d\ude00").text == "\U0001f600"  # a surrogate pair is joined
    terms = parse_expression('+"a \ud800 dog" +x\udc00.jpg')
    assert terms[0].text == "a \ufffd dog" and terms[1].image == "x\ufffd.jpg"
    for term in terms:
        (term.text or str(term.image)).encode("utf-8")


@pytest.mark.parametrize("expression", ['+"\\x"', "+'a\\xZ1'", '+"\\u12"', '-"\\U0011FFFF"', '"ok" +"\\u"'])
def test_invalid_escapes_are_compose_errors(expression):
    with pytest.raises(ComposeError, match="invalid escape"):
        parse_expression(expression)


def test_escapes_in_quoted_texts():
    terms = parse_expression(r'''+"say \"cheese\"" +'it\'s' +"tab\there" +"\x41\u00e9\\" +"café \q"''')
    assert [t.text for t in terms] == ['say "cheese"', "it's", "tab\there", "Aé\\", "café \\q"]


def test_listing_methods_and_building_queries_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, clipmath.compose as c;"
        "assert 'combiner' in c.available_methods() and c.build_query(expression='+a.jpg -\"b\"').terms;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
