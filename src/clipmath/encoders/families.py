"""The model families clipmath runs, and notable checkpoints of each (no torch import here).

:data:`HF_FAMILIES` says how each transformers family is run (picked by a checkpoint's ``model_type``);
:data:`FAMILIES` is what ``clipmath models`` shows; :func:`known_models` reads ``known_models.json``, a cited list
of checkpoints with their dimension, input size, licence and published zero-shot figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

__all__ = ["FAMILIES", "HF_FAMILIES", "HF_UNSUPPORTED", "Family", "HFFamily", "known_models"]


@dataclass(frozen=True)
class HFFamily:
    """One transformers dual-encoder family: its model class, how its tokenizer pads (``max_length``: always to
    the full context, as SigLIP was trained), and where its text tower's token-embedding table lives."""

    model_class: str
    padding: str | bool = True
    token_table: str = "text_model.embeddings.token_embedding"
    label: str = ""


#: The families a transformers checkpoint may be, keyed by its ``config.json`` ``model_type``.
HF_FAMILIES = {
    "clip": HFFamily("CLIPModel", label="CLIP"),
    "siglip": HFFamily("SiglipModel", padding="max_length", label="SigLIP / SigLIP 2 (fixed resolution)"),
    "chinese_clip": HFFamily(
        "ChineseCLIPModel", token_table="text_model.embeddings.word_embeddings", label="Chinese-CLIP"
    ),  # fmt: skip
    "altclip": HFFamily("AltCLIPModel", token_table="text_model.roberta.embeddings.word_embeddings", label="AltCLIP"),
}
#: Families transformers has but clipmath cannot run yet, with the reason.
HF_UNSUPPORTED = {
    "siglip2": "SigLIP 2 NaFlex (variable resolution) needs per-image patch masks that the image pipeline does not "
    "make yet; use a fixed-resolution SigLIP 2 checkpoint (model_type 'siglip') or open_clip's "
    "'hf-hub:timm/ViT-B-16-SigLIP2'",
}


@dataclass(frozen=True)
class Family:
    """One family as ``clipmath models`` lists it: what library runs it and which ``--model`` values reach it."""

    name: str
    library: str
    accepts: str


FAMILIES = (
    Family("open_clip", "open_clip (clipmath[models])",
           "open_clip:ARCH/TAG (any list_models() architecture, list_pretrained() tag); hf-hub:ORG/REPO; "
           "a folder with open_clip_config.json + weights"),
    *(
        Family(f"hf-{model_type}", "transformers",
               f"a hub name or save_pretrained folder whose config.json model_type is '{model_type}' ({f.model_class})")
        for model_type, f in HF_FAMILIES.items()
    ),
    Family("offline-imagenet-minilm", "clipmath", "offline-imagenet-minilm (installs from the package registry)"),
)  # fmt: skip


def known_models() -> dict:
    """``known_models.json``: ``{"sources": {key: citation}, "models": [...]}``."""
    text = resources.files("clipmath.encoders").joinpath("known_models.json").read_text(encoding="utf-8")
    return json.loads(text)
