"""The plug-in point for captioning: the server calls a :class:`Captioner` if it has one.

The shapes live in :mod:`clipmath.caption.service`: pass ``create_app(retriever, config, captioner=...)`` any object
with the :class:`Captioner` shape (e.g. a :class:`FunctionCaptioner` over plain functions), or name a language model,
decoder or difference checkpoint in the :class:`~clipmath.serve.config.ServeConfig` and the server assembles one
with :func:`~clipmath.caption.service.make_captioner`, as ``clipmath serve`` does.
"""

from clipmath.caption.service import (
    Captioner,
    CaptionSubject,
    FunctionCaptioner,
    captions_label,
    differences_label,
    make_captioner,
)

__all__ = ["CaptionSubject", "Captioner", "FunctionCaptioner", "captions_label", "differences_label", "make_captioner"]
