"""Checks on the scalar and text values of a query, shared by every way a query is made.

Weights (``lam``, expression weights) must be finite numbers of magnitude at most :data:`MAX_WEIGHT`. Embeddings
are unit vectors, so a weight of 1000 already drowns every other operand; beyond that a query is a typo or an
attack, and from about 1e19 the float32 norm overflows and every score becomes 0. Texts may come from JSON or a
shell and hold lone UTF-16 surrogates, which no tokenizer (nor JSON encoder) accepts: they are replaced by U+FFFD.
"""

from __future__ import annotations

import math

from clipmath.errors import ComposeError

#: The largest magnitude accepted for ``lam`` and for an expression weight.
MAX_WEIGHT = 1000.0

__all__ = ["MAX_WEIGHT", "check_weight", "clean_text"]


def check_weight(value: object, field: str = "lam") -> float:
    """``value`` as a float, or a one-line :class:`ComposeError` naming ``field`` if it is not a sane weight."""
    if isinstance(value, bool):
        raise ComposeError(f"'{field}' must be a number, not {value!r}", field=field)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ComposeError(f"'{field}' must be a number, not {_short(value)}", field=field) from None
    if not math.isfinite(number):
        raise ComposeError(f"'{field}' must be a finite number, not {number}", field=field)
    if abs(number) > MAX_WEIGHT:
        raise ComposeError(
            f"'{field}' = {number:g} is out of range: use a value between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}",
            field=field,
        )
    return number


def clean_text(text: str) -> str:
    """``text`` with surrogate pairs joined and lone surrogates replaced by U+FFFD (other text unchanged)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
