"""One way from plain query fields to a :class:`CompositionQuery`, and one rule for the method they mean.

Every front end (CLI options, HTTP JSON, the Python API) hands the fields it was given to :func:`build_query`
and, when the user named no method, to :func:`infer_method`::

    method = infer_method(reference="cat.jpg", source="cat", target="dog")       # -> "delta"
    query = build_query(reference="cat.jpg", source="cat", target="dog", lam=0.8)

Errors are :class:`~clipmath.errors.ComposeError` naming the field (``exc.field``), never a front end's flag.
"""

from __future__ import annotations

from collections.abc import Callable

from clipmath.compose.base import CompositionQuery, ImageInput, Term
from clipmath.compose.expression import parse_expression
from clipmath.errors import ComposeError

__all__ = ["QUERY_FIELDS", "ImageResolver", "build_query", "infer_method"]

#: The plain fields a user may give for one query.
QUERY_FIELDS = ("reference", "text", "source", "target", "lam", "expression", "reference_id")

#: Turns an image named by a string (a path, a gallery id, ``upload:<id>``…) into ``(image, gallery id or None)``.
#: The image may be a vector; a gallery id is excluded from the query's results.
ImageResolver = Callable[[str], tuple[ImageInput, str | None]]


def _given(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value)


def infer_method(
    *,
    reference: object = None,
    text: str | None = None,
    source: str | None = None,
    target: str | None = None,
    expression: str | None = None,
) -> str:
    """The method a query means when it names none.

    An expression -> ``expr``; a source or target text -> ``delta``; a reference and a text -> ``sum``; a reference
    alone -> ``image``; a text alone -> ``text``. Nothing usable is a :class:`ComposeError`.
    """
    if _given(expression):
        return "expr"
    if source is not None or target is not None:
        return "delta"
    if _given(reference) and _given(text):
        return "sum"
    if _given(reference):
        return "image"
    if _given(text):
        return "text"
    raise ComposeError(
        "give a query: a reference image and/or a text, a reference with source and target texts, or an expression"
    )


def build_query(
    *,
    reference: ImageInput | None = None,
    text: str | None = None,
    source: str | None = None,
    target: str | None = None,
    lam: float = 1.0,
    expression: str | None = None,
    reference_id: str | None = None,
    resolve_image: ImageResolver | None = None,
) -> CompositionQuery:
    """A validated :class:`CompositionQuery` from plain fields.

    ``expression`` is parsed (see :func:`~clipmath.compose.parse_expression`); ``lam`` and expression weights are
    checked (finite, within ±``MAX_WEIGHT``); texts are cleaned of lone surrogates. With ``resolve_image``, every
    image named by a string (the reference and expression operands) is resolved through it, and the gallery ids it
    returns are recorded so that those images are excluded from the results.
    """
    terms: list[Term] = parse_expression(expression) if _given(expression) else []
    if resolve_image is not None:
        if isinstance(reference, str):
            reference, found_id = resolve_image(reference)
            reference_id = reference_id or found_id
        for term in terms:
            if isinstance(term.image, str):
                term.image, term.image_id = resolve_image(term.image)
    return CompositionQuery(
        reference=reference,
        text=text,
        source=source,
        target=target,
        lam=lam,
        terms=terms,
        reference_id=reference_id,
    )
