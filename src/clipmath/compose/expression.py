"""Weighted arithmetic over images and texts (ZeroCap's visual-semantic arithmetic, SIMAT-style edits).

Syntax of an expression string: terms separated by spaces, each ``[+|-][WEIGHT*]OPERAND``, where an operand is an
image path (unquoted) or a text (in double or single quotes)::

    +woman.jpg +king.jpg -man.jpg
    cat.jpg -"a photo of a cat" +"a photo of a dog"
    0.5*a.jpg +1.5*"a red car"
    +"say \\"cheese\\"" -'it\\'s'          (quotes escaped with a backslash; also \\n \\t \\\\ \\xHH \\uHHHH)

The query is ``normalize(Σ weight · normalize(embedding))``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clipmath.compose.base import (
    Composer,
    CompositionQuery,
    QueryEmbeddings,
    Term,
    encode_image_inputs,
    missing_input,
    normalise,
)
from clipmath.compose.values import check_weight, clean_text
from clipmath.errors import ComposeError

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

_TERM = re.compile(
    r"""\s*(?P<sign>[+-])?\s*
        (?:(?P<weight>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*\*\s*)?
        (?P<operand>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"']+)""",
    re.VERBOSE | re.DOTALL,
)
#: Escapes understood inside a quoted text; any other backslash pair is kept as written.
_ESCAPE = re.compile(
    r"\\(?:x(?P<x>[0-9a-fA-F]{2})|u(?P<u>[0-9a-fA-F]{4})|U(?P<U>[0-9a-fA-F]{8})|(?P<other>.))", re.DOTALL
)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def parse_expression(expression: str) -> list[Term]:
    """Parse an expression string into weighted terms; raises :class:`ComposeError` pointing at the problem.

    Any string gives either terms or a :class:`ComposeError` (never another exception). Weights are checked like
    ``lam`` (finite, at most :data:`~clipmath.compose.values.MAX_WEIGHT` in magnitude).
    """
    if not isinstance(expression, str):
        raise ComposeError(f"an expression is a string, not {type(expression).__name__}", field="expression")
    terms: list[Term] = []
    text = expression.strip()  # texts are cleaned term by term; image operands may be non-UTF-8 file names
    if not text:
        raise ComposeError("empty expression: give terms like  +king.jpg -man.jpg +woman.jpg", field="expression")
    position = 0
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.end() == position:
            snippet = text[position : position + 20]
            hint = "unterminated quote" if snippet.lstrip()[:1] in "\"'" or "*" in snippet else "cannot parse"
            raise ComposeError(f"{hint} in expression at character {position}: {snippet!r}", field="expression")
        sign = -1.0 if match.group("sign") == "-" else 1.0
        weight = sign * _weight(match.group("weight"), position)
        operand = match.group("operand")
        if operand[0] in "\"'":
            body = _unescape(operand[1:-1], match.start("operand") + 1)
            if not body.strip():
                raise ComposeError(f"empty text in expression at character {position}", field="expression")
            terms.append(Term(weight=weight, text=body))
        else:
            terms.append(Term(weight=weight, image=_file_name(operand)))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    if all(t.weight == 0 for t in terms):
        raise ComposeError("every weight in the expression is zero", field="expression")
    return terms


def _file_name(operand: str) -> str:
    """An image operand as a file name: the surrogates that stand for non-UTF-8 bytes of a name (as Python decodes
    file names) are kept, so such files can be operands; any other lone surrogate is replaced (no such file)."""
    try:
        operand.encode("utf-8", "surrogateescape")
        return operand
    except UnicodeEncodeError:
        return clean_text(operand)


def _weight(written: str | None, position: int) -> float:
    if written is None:
        return 1.0
    try:
        return check_weight(written, "weight")
    except ComposeError as exc:
        raise ComposeError(f"{exc} (expression term at character {position})", field="expression") from None


def _unescape(body: str, offset: int) -> str:
    """Resolve backslash escapes in a quoted text (``\\"``, ``\\n``, ``\\xHH``, ``\\uHHHH``, ``\\UHHHHHHHH``)."""
    if "\\" not in body:
        return body

    def replace(match: re.Match[str]) -> str:
        code = match.group("x") or match.group("u") or match.group("U")
        if code is not None:
            value = int(code, 16)
            if value > 0x10FFFF:
                raise ComposeError(
                    f"invalid escape {match.group(0)!r} in expression text at character {offset + match.start()}",
                    field="expression",
                )
            return chr(value)
        other = match.group("other")
        if other in "xuU":
            raise ComposeError(
                f"invalid escape '\\{other}' in expression text at character {offset + match.start()}: "
                f"\\{other} needs {dict(x=2, u=4, U=8)[other]} hex digits",
                field="expression",
            )
        return _SIMPLE_ESCAPES.get(other, match.group(0))

    return clean_text(_ESCAPE.sub(replace, body))


def weighted_sum(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """``normalize(Σ w_i · normalize(v_i))`` for one expression; ``vectors`` is ``(T, D)``."""
    combined = (np.asarray(weights, dtype=np.float32)[:, None] * normalise(vectors)).sum(axis=0)
    return normalise(combined[None, :])[0]


class Expression(Composer):
    def compose(self, encoder: Encoder, queries: Sequence[CompositionQuery], batch_size: int = 64) -> np.ndarray:
        if not queries:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        for i, query in enumerate(queries):
            if not query.terms:
                raise missing_input(self.name, "terms", i)
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
