"""Property-based tests (hypothesis) of the expression parser and the query values: any input gives a query or a
one-line ComposeError, never another exception (issue 11)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipmath.compose import MAX_WEIGHT, CompositionQuery, Term, parse_expression
from clipmath.errors import ComposeError

BOUNDED = settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])

#: Pieces an attacker (or a typo) puts in expressions: quotes, escapes, signs, weights, surrogates, controls.
PIECES = st.sampled_from(
    [
        '"',
        "'",
        "\\",
        "\\x",
        "\\u",
        "\\U",
        "\\x4",
        "+",
        "-",
        "*",
        " ",
        "\n",
        "\t",
        "1e400",
        "nan",
        "inf",
        "0",
        "0.5",
        "1e40",
        "1e3",
        ".5",
        "a.jpg",
        "dir/x.png",
        "\ud800",
        "\udfff",
        "é",
        "\x00",
        "$",
        "upload:abc",
        '*"x"',
    ]
)
EXPRESSIONS = st.one_of(
    st.text(max_size=60), st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=12).map("".join)
)


def check_terms(terms: list[Term]) -> None:
    assert terms and any(t.weight != 0 for t in terms)
    for term in terms:
        assert math.isfinite(term.weight) and abs(term.weight) <= MAX_WEIGHT
        assert (term.image is None) != (term.text is None)
        if term.text is not None:
            term.text.encode("utf-8")  # no lone surrogate survives in a text
        else:
            str(term.image).encode("utf-8", "surrogateescape")  # a file name: only the surrogates of non-UTF-8 bytes


@BOUNDED
@given(EXPRESSIONS)
def test_any_string_parses_or_is_a_compose_error(expression):
    try:
        terms = parse_expression(expression)
    except ComposeError as exc:
        assert "\n" not in str(exc).strip() or "\n" in expression  # one line, unless it quotes the input
        return
    check_terms(terms)


@BOUNDED
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["+", "-", ""]),
            st.floats(min_value=0, max_value=2 * MAX_WEIGHT, allow_nan=False, allow_infinity=False),
            st.one_of(st.from_regex(r"[A-Za-z0-9_./]{1,12}", fullmatch=True), st.text(max_size=12)),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_well_formed_terms_round_trip(parts):
    written = []
    for sign, weight, operand, quoted in parts:
        if quoted:
            escaped = operand.replace("\\", "\\\\").replace('"', '\\"')
            written.append(f'{sign}{weight!r}*"{escaped}"')
        elif operand and not any(c.isspace() or c in "\"'" for c in operand) and operand[0] not in "+-":
            written.append(f"{sign}{weight!r}*{operand}")
    expression = " ".join(written)
    try:
        terms = parse_expression(expression)
    except ComposeError as exc:
        message = str(exc)
        assert any(w in message for w in ("empty", "zero", "out of range", "cannot parse", "text")), message
        return
    check_terms(terms)
    assert len(terms) == len(written)


@BOUNDED
@given(st.one_of(st.floats(), st.integers(), st.text(max_size=8), st.none(), st.booleans()))
def test_lam_is_a_sane_float_or_a_compose_error(lam):
    try:
        query = CompositionQuery(text="x", lam=lam)
    except ComposeError as exc:
        assert exc.field == "lam"
        return
    assert isinstance(query.lam, float) and math.isfinite(query.lam) and abs(query.lam) <= MAX_WEIGHT


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))


@BOUNDED
@given(
    reference=st.one_of(st.none(), st.text(max_size=12)),
    text=st.one_of(st.none(), st.text(max_size=20)),
    source=st.one_of(st.none(), st.text(max_size=8)),
    target=st.one_of(st.none(), st.text(max_size=8)),
    lam=JSON_SCALARS,
    expression=st.one_of(st.none(), EXPRESSIONS),
)
def test_any_plain_fields_build_a_clean_query_or_a_compose_error(reference, text, source, target, lam, expression):
    from clipmath.compose import METHODS, build_query, infer_method

    try:
        method = infer_method(reference=reference, text=text, source=source, target=target, expression=expression)
        assert method in METHODS
    except ComposeError:
        pass
    try:
        query = build_query(
            reference=reference, text=text, source=source, target=target, lam=lam, expression=expression
        )
    except ComposeError as exc:
        assert exc.field in (None, "lam", "expression", "weight")
        str(exc).encode("utf-8")  # printable and serialisable, even when the input was not
        return
    assert math.isfinite(query.lam) and abs(query.lam) <= MAX_WEIGHT
    for value in (query.text, query.source, query.target):
        assert value is None or isinstance(value.encode("utf-8"), bytes)
    if query.terms:
        check_terms(query.terms)
