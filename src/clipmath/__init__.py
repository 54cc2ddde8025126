"""clipmath: arithmetic in a shared image–text embedding space (CLIP and its family).

Compose a query from a reference image and text, search an image gallery with it, evaluate on the composed image
retrieval benchmarks, caption embeddings, and serve it all over HTTP.

The public names below are imported lazily, so ``import clipmath`` (and ``clipmath --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipmath import torchvision_guard as _torchvision_guard

__version__ = "0.1.0"

_EXPORTS = {
    "ClipmathError": "clipmath.errors",
    "ComposeError": "clipmath.errors",
    "CompositionQuery": "clipmath.compose",
    "METHODS": "clipmath.compose",
    "MethodSpec": "clipmath.compose",
    "Term": "clipmath.compose",
    "available_methods": "clipmath.compose",
    "build_query": "clipmath.compose",
    "get_composer": "clipmath.compose",
    "infer_method": "clipmath.compose",
    "parse_expression": "clipmath.compose",
    "register_method": "clipmath.compose",
    "ENCODERS": "clipmath.encoders",
    "Encoder": "clipmath.encoders",
    "EncoderSpec": "clipmath.encoders",
    "load_encoder": "clipmath.encoders",
    "register_encoder": "clipmath.encoders",
    "Retriever": "clipmath.retrieval",
    "RetrieverConfig": "clipmath.retrieval",
    "Gallery": "clipmath.store",
    "IndexConfig": "clipmath.store",
    "index_folder": "clipmath.store",
}

__all__ = ["__version__", *_EXPORTS]

# A CUDA torchvision beside a CPU torch must not break open_clip, timm or transformers' image code
# (clipmath.torchvision_guard; imports nothing heavy until torchvision itself is imported).
_torchvision_guard.install()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clipmath' has no attribute {name!r}")
