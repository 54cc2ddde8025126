"""Weighted arithmetic over images and texts (ZeroCap's visual-semantic arithmetic, SIMAT-style edits).

Syntax of an expression string: terms separated by spaces, each ``[+|-][WEIGHT*]OPERAND``, where an operand is an
image path (unquoted) or a text (in double or single quotes)::

    +woman.jpg +king.jpg -man.jpg
    cat.jpg -"a photo of a cat" +"a photo of a dog"
    0.5*a.jpg +1.5*"a red car"

The query is ``normalize(Σ weight · normalize(embedding))``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from clipmath.compose.base import (
    Composer,
    CompositionQuery,
    QueryEmbeddings,
    Term,
    encode_image_inputs,
    normalise,
)
from clipmath.encoders.base import Encoder
from clipmath.errors import ComposeError

_TERM = re.compile(
    r"""\s*(?P<sign>[+-])?\s*
        (?:(?P<weight>\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?
        (?P<operand>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"']+)""",
    re.VERBOSE,
)


def parse_expression(expression: str) -> list[Term]:
    """Parse an expression string into weighted terms; raises :class:`ComposeError` pointing at the problem."""
    terms: list[Term] = []
    position = 0
    text = expression.strip()
    if not text:
        raise ComposeError("empty expression: give terms like  +king.jpg -man.jpg +woman.jpg")
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.end() == position:
            snippet = text[position : position + 20]
            hint = "unterminated quote" if snippet.lstrip()[:1] in "\"'" or "*" in snippet else "cannot parse"
            raise ComposeError(f"{hint} in expression at character {position}: {snippet!r}")
        sign = -1.0 if match.group("sign") == "-" else 1.0
        weight = sign * float(match.group("weight") or 1.0)
        operand = match.group("operand")
        if operand[0] in "\"'":
            body = bytes(operand[1:-1], "utf-8").decode("unicode_escape") if "\\" in operand else operand[1:-1]
            if not body.strip():
                raise ComposeError(f"empty text in expression at character {position}")
            terms.append(Term(weight=weight, text=body))
        else:
            terms.append(Term(weight=weight, image=operand))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    if all(t.weight == 0 for t in terms):
        raise ComposeError("every weight in the expression is zero")
    return terms


def weighted_sum(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """``normalize(Σ w_i · normalize(v_i))`` for one expression; ``vectors`` is ``(T, D)``."""
    combined = (np.asarray(weights, dtype=np.float32)[:, None] * normalise(vectors)).sum(axis=0)
    return normalise(combined[None, :])[0]


class Expression(Composer):
    name = "expr"
    needs = ("terms",)
    description = "Σ weight·embedding over images and texts (ZeroCap arithmetic)"

    def compose(self, encoder: Encoder, queries: Sequence[CompositionQuery], batch_size: int = 64) -> np.ndarray:
        if not queries:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        for i, query in enumerate(queries):
            if not query.terms:
                raise ComposeError(f"method 'expr' needs --expr (missing for query {i})")
        flat = [term for query in queries for term in query.terms]
        vectors = embed_terms(encoder, flat, batch_size)
        out, start = [], 0
        for query in queries:
            stop = start + len(query.terms)
            out.append(weighted_sum(vectors[start:stop], [t.weight for t in query.terms]))
            start = stop
        return np.stack(out)

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:  # pragma: no cover - compose() is overridden
        raise NotImplementedError


def embed_terms(encoder: Encoder, terms: Sequence[Term], batch_size: int = 64) -> np.ndarray:
    """Normalised embeddings ``(T, D)`` of expression terms, batching images and texts separately."""
    vectors = np.zeros((len(terms), encoder.dim), dtype=np.float32)
    image_rows = [i for i, t in enumerate(terms) if t.image is not None]
    text_rows = [i for i, t in enumerate(terms) if t.text is not None]
    if image_rows:
        vectors[image_rows] = encode_image_inputs(encoder, [terms[i].image for i in image_rows], batch_size)
    if text_rows:
        vectors[text_rows] = encoder.encode_texts([terms[i].text for i in text_rows], batch_size=batch_size)
    return vectors
