"""Encoders that are not registry entries: a Hugging Face hub name, or a local folder holding a saved model (a
transformers ``save_pretrained`` folder of any family in ``HF_FAMILIES``, or an OpenCLIP hub-layout folder with
``open_clip_config.json``).

A folder written by ``clipmath train finetune`` holds a transformers model plus ``clipmath.json`` (its kind, the
model it was fine-tuned from, its dimension and the image preprocessing it was trained with). Loading such a folder
honours that description: its preprocessing is the default, its dimension is checked, and its description says what
it was fine-tuned from. A folder holding a learned method's checkpoint instead is refused with a pointer to its use.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from clipmath.encoders.base import Encoder
from clipmath.encoders.specs import LoadOptions
from clipmath.encoders.transforms import ImageTransform
from clipmath.errors import ModelLoadError

#: The description file clipmath writes beside every checkpoint (``clipmath.compose.checkpoint`` uses it too).
DESCRIPTION_FILE = "clipmath.json"
FINETUNE_KIND = "finetune"

__all__ = ["DESCRIPTION_FILE", "FINETUNE_KIND", "folder_description", "load_hub_or_folder"]


def folder_description(folder: Path) -> dict[str, Any] | None:
    """The ``clipmath.json`` of a model folder, or ``None`` when it has none (a plain ``save_pretrained`` folder)."""
    path = folder / DESCRIPTION_FILE
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is unreadable: {exc}") from None
    if not isinstance(description, dict):
        raise ModelLoadError(f"{path} is not a clipmath description (expected a JSON object)")
    return description


def load_hub_or_folder(name: str, options: LoadOptions, preprocessing_given: bool) -> Encoder:
    """Load ``name`` as a local CLIP folder (honouring its ``clipmath.json``) or a hub name.

    ``preprocessing_given``: the caller chose ``options.transform`` explicitly; otherwise a fine-tuned folder's own
    preprocessing is used.
    """
    from clipmath.encoders.hf_clip import HFClipEncoder
    from clipmath.encoders.open_clip_encoder import OpenClipEncoder, is_open_clip_folder

    folder = Path(name).expanduser()
    if folder.is_dir() and is_open_clip_folder(folder):
        return OpenClipEncoder.load(str(folder), options.device, options.transform, options.dtype)
    description = folder_description(folder) if folder.is_dir() else None
    if description is None:
        return HFClipEncoder.load(name, device=options.device, transform=options.transform, dtype=options.dtype)
    kind = description.get("kind")
    if kind != FINETUNE_KIND:
        raise ModelLoadError(
            f"{folder} holds a '{kind}' checkpoint of a learned method, not a model: give it as that method's "
            "checkpoint, and the model it was trained on as the model"
        )
    transform = options.transform
    if not preprocessing_given and description.get("preprocessing"):
        try:
            transform = ImageTransform.from_key(str(description["preprocessing"]))
        except ValueError as exc:
            raise ModelLoadError(f"{folder / DESCRIPTION_FILE}: {exc}") from None
    encoder = HFClipEncoder.load(str(folder), device=options.device, transform=transform, dtype=options.dtype)
    dim = description.get("dim")
    if dim is not None and int(dim) != encoder.info.dim:
        raise ModelLoadError(
            f"{folder / DESCRIPTION_FILE} describes a {dim}-d model, but the weights in {folder} are "
            f"{encoder.info.dim}-d: the folder is damaged or mixed up"
        )
    base = description.get("model_id", "an unknown model")
    note = f"CLIP fine-tuned from {base} (clipmath train finetune)"
    encoder.info = dataclasses.replace(encoder.info, description=note)
    return encoder
