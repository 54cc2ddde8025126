"""Composition methods: one interface (:class:`Composer`), one file per method, and a registry by name.

:data:`METHODS` holds a :class:`MethodSpec` per method: zero-shot ones (``image``, ``text``, ``sum``, ``delta``,
``expr``) and learned ones (``combiner``, ``adapted-delta``, ``searle``, ``oti``) that load a checkpoint written by
``clipmath train``. :func:`build_query` and :func:`infer_method` turn plain fields into a query and its method.
"""

from __future__ import annotations

from clipmath.compose.base import (
    Composer,
    CompositionQuery,
    QueryEmbeddings,
    Term,
    check_needs,
    embed_queries,
    encode_image_inputs,
    normalise,
)
from clipmath.compose.delta import Delta, delta
from clipmath.compose.elementwise_sum import ElementwiseSum, elementwise_sum
from clipmath.compose.expression import Expression, parse_expression, weighted_sum
from clipmath.compose.image_only import ImageOnly, image_only
from clipmath.compose.methods import (
    METHODS,
    MethodSpec,
    available_methods,
    get_composer,
    learned_methods,
    method_spec,
    register_method,
    split_method,
    zero_shot_methods,
)
from clipmath.compose.query import QUERY_FIELDS, ImageResolver, build_query, infer_method
from clipmath.compose.text_only import TextOnly, text_only
from clipmath.compose.values import MAX_WEIGHT, check_weight, clean_text

__all__ = [
    "check_needs",
    "MAX_WEIGHT",
    "METHODS",
    "QUERY_FIELDS",
    "Composer",
    "CompositionQuery",
    "Delta",
    "ElementwiseSum",
    "Expression",
    "ImageOnly",
    "ImageResolver",
    "MethodSpec",
    "QueryEmbeddings",
    "Term",
    "TextOnly",
    "available_methods",
    "build_query",
    "check_weight",
    "clean_text",
    "delta",
    "elementwise_sum",
    "embed_queries",
    "encode_image_inputs",
    "get_composer",
    "split_method",
    "image_only",
    "infer_method",
    "learned_methods",
    "method_spec",
    "normalise",
    "parse_expression",
    "register_method",
    "text_only",
    "weighted_sum",
    "zero_shot_methods",
]
