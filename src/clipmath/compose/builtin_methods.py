"""The built-in compose methods, registered in :data:`clipmath.compose.METHODS` on its first use."""

from __future__ import annotations

from clipmath.compose.methods import MethodSpec, register_method

_IMAGE_TEXT = ("reference", "text")
_DELTA = ("reference", "source", "target", "lam")

BUILTIN_METHODS = (
    MethodSpec("image", "reference image only", ("reference",), "clipmath.compose.image_only:ImageOnly"),
    MethodSpec("text", "modification text only", ("text",), "clipmath.compose.text_only:TextOnly"),
    MethodSpec(
        "sum",
        "normalize(img) + normalize(text)  (CLIP4Cir baseline)",
        _IMAGE_TEXT,
        "clipmath.compose.elementwise_sum:ElementwiseSum",
    ),
    MethodSpec("delta", "img + λ·(text_to − text_from)  (SIMAT)", _DELTA, "clipmath.compose.delta:Delta"),
    MethodSpec(
        "expr",
        "Σ weight·embedding over images and texts (ZeroCap arithmetic)",
        ("terms",),
        "clipmath.compose.expression:Expression",
    ),
    # Caption -> rewrite -> text retrieval (zero-shot; they live with the caption decoders, one layer up).
    MethodSpec(
        "cirevl",
        "text(rewrite(caption(img), text))  (CIReVL)",
        _IMAGE_TEXT,
        "clipmath.caption.rewrite_methods:RewriteRetrieval",
        settings="clipmath.caption.rewrite_methods:RewriteSettings",
    ),
    MethodSpec(
        "ldre",
        "softmax-weighted ensemble of 15 caption rewrites  (LDRE)",
        _IMAGE_TEXT,
        "clipmath.caption.rewrite_methods:EnsembleRetrieval",
        settings="clipmath.caption.rewrite_methods:EnsembleSettings",
    ),
    MethodSpec(
        "seize",
        "LDRE ensemble, gallery re-scored by s_after and s_after − s_before  (SEIZE)",
        _IMAGE_TEXT,
        "clipmath.caption.rewrite_methods:SeizeRetrieval",
        settings="clipmath.caption.rewrite_methods:EnsembleSettings",
    ),
    MethodSpec(
        "pdv",
        "text(rewrite) + w·(img − text(caption)): the image added back  (CIReVL + PDV)",
        _IMAGE_TEXT,
        "clipmath.caption.rewrite_methods:ImageFusionRetrieval",
        settings="clipmath.caption.rewrite_methods:RewriteSettings",
    ),
    MethodSpec(
        "combiner",
        "learned gated fusion (1−λ)·img + λ·text + v  (CLIP4Cir Combiner; `clipmath train combiner`)",
        _IMAGE_TEXT,
        "clipmath.compose.combiner:load_combiner",
        learned=True,
        train_command="combiner",
    ),
    MethodSpec(
        "adapted-delta",
        "img + λ·(text_to − text_from) through trained linear heads  (SIMAT; `clipmath train adapter`)",
        _DELTA,
        "clipmath.compose.adapted_delta:load_adapted_delta",
        learned=True,
        train_command="adapter",
    ),
    MethodSpec(
        "searle",
        'text("a photo of $ that {caption}"), $ = phi(image)  (SEARLE; `clipmath train phi`)',
        _IMAGE_TEXT,
        "clipmath.compose.searle:load_searle",
        learned=True,
        train_command="phi",
    ),
    MethodSpec(
        "oti",
        'text("a photo of $ that {caption}"), $ optimised per image  (SEARLE-OTI; `clipmath train oti`)',
        _IMAGE_TEXT,
        "clipmath.compose.searle:load_oti",
        learned=True,
        train_command="oti",
    ),
    MethodSpec(
        "lincir",
        'text("a photo of $ that {caption}"), $ = phi(image), phi from captions only  (LinCIR; `train lincir`)',
        _IMAGE_TEXT,
        "clipmath.compose.searle:load_searle",
        learned=True,
        train_command="lincir",
    ),
)

for _spec in BUILTIN_METHODS:
    register_method(_spec)
