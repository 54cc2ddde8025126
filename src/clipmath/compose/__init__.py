"""Composition methods: one interface (:class:`Composer`), one file per method, and a registry by name.

Zero-shot methods (``image``, ``text``, ``sum``, ``delta``, ``expr``) need no checkpoint. Learned methods
(``combiner``, ``adapted-delta``, ``searle``, ``oti``) are listed in ``_LEARNED`` with a factory that takes the
encoder and a checkpoint path (written by ``clipmath train``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from clipmath.compose.base import (
    Composer,
    CompositionQuery,
    QueryEmbeddings,
    Term,
    embed_queries,
    encode_image_inputs,
    normalise,
)
from clipmath.compose.delta import Delta, delta
from clipmath.compose.elementwise_sum import ElementwiseSum, elementwise_sum
from clipmath.compose.expression import Expression, parse_expression, weighted_sum
from clipmath.compose.image_only import ImageOnly, image_only
from clipmath.compose.text_only import TextOnly, text_only
from clipmath.encoders.base import Encoder
from clipmath.errors import ComposeError

#: factory(encoder, checkpoint) -> Composer, for methods that load trained weights.
ComposerFactory = Callable[[Encoder | None, str | None], Composer]

_ZERO_SHOT: dict[str, type[Composer]] = {
    cls.name: cls for cls in (ImageOnly, TextOnly, ElementwiseSum, Delta, Expression)
}
#: Learned methods: name -> ("module:factory", description). Imported lazily, so a method's weights and
#: modules are only touched when it is used.
_LEARNED: dict[str, tuple[str, str]] = {
    "combiner": (
        "clipmath.compose.combiner:load_combiner",
        "learned gated fusion (1−λ)·img + λ·text + v  (CLIP4Cir Combiner; `clipmath train combiner`)",
    ),
    "adapted-delta": (
        "clipmath.compose.adapted_delta:load_adapted_delta",
        "img + λ·(text_to − text_from) through trained linear heads  (SIMAT; `clipmath train adapter`)",
    ),
    "searle": (
        "clipmath.compose.searle:load_searle",
        'text("a photo of $ that {caption}"), $ = phi(image)  (SEARLE; `clipmath train phi`)',
    ),
    "oti": (
        "clipmath.compose.searle:load_oti",
        'text("a photo of $ that {caption}"), $ optimised per image  (SEARLE-OTI; `clipmath train oti`)',
    ),
}


def zero_shot_methods() -> list[str]:
    return list(_ZERO_SHOT)


def learned_methods() -> list[str]:
    return list(_LEARNED)


def available_methods() -> dict[str, str]:
    """Every method name with a one-line description (learned ones marked as needing a checkpoint)."""
    methods = {name: cls.description for name, cls in _ZERO_SHOT.items()}
    methods.update({name: f"{text} [needs --checkpoint]" for name, (_, text) in _LEARNED.items()})
    return methods


def get_composer(name: str, encoder: Encoder | None = None, checkpoint: str | None = None) -> Composer:
    """The composer called ``name``; learned methods load ``checkpoint`` (and may need the encoder)."""
    if name in _ZERO_SHOT:
        if checkpoint:
            raise ComposeError(f"method '{name}' takes no checkpoint")
        return _ZERO_SHOT[name]()
    if name not in _LEARNED:
        known = ", ".join(list(_ZERO_SHOT) + list(_LEARNED))
        raise ComposeError(f"unknown method '{name}'; available: {known}")
    if not checkpoint:
        raise ComposeError(f"method '{name}' needs --checkpoint PATH (train one with `clipmath train`)")
    module_name, factory_name = _LEARNED[name][0].split(":")
    factory: ComposerFactory = getattr(importlib.import_module(module_name), factory_name)
    return factory(encoder, checkpoint)


__all__ = [
    "Composer",
    "CompositionQuery",
    "Delta",
    "ElementwiseSum",
    "Expression",
    "ImageOnly",
    "QueryEmbeddings",
    "Term",
    "TextOnly",
    "available_methods",
    "delta",
    "elementwise_sum",
    "embed_queries",
    "encode_image_inputs",
    "get_composer",
    "image_only",
    "learned_methods",
    "normalise",
    "parse_expression",
    "text_only",
    "weighted_sum",
    "zero_shot_methods",
]
