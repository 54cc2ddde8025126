"""Checkpoints of learned methods: safetensors tensors plus a JSON description; nothing is ever unpickled.

A checkpoint is a folder::

    PATH/clipmath.json          what it is: kind, the encoder it was trained on, the training config, history
    PATH/weights.safetensors    the tensors (its metadata repeats clipmath.json, so the file alone is complete)
    PATH/resume/                optimiser and random-generator state, only needed to resume training

or a single ``NAME.safetensors`` file with a sidecar ``NAME.json`` (resume state in ``NAME.resume/``).
A CLIP fine-tuned by ``clipmath train finetune`` is a transformers model folder with ``clipmath.json`` beside it.

Loading checks that the checkpoint was trained on the encoder in use (same ``model_id``): a head or a Combiner
trained on one embedding space means nothing in another.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipmath.encoders.base import Encoder, EncoderInfo
from clipmath.encoders.compat import EmbeddingSpace, check_same_space
from clipmath.encoders.folder import DESCRIPTION_FILE
from clipmath.errors import ModelLoadError

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
RESUME_DIR = "resume"
METADATA_KEY = "clipmath"


@dataclass
class Checkpoint:
    """A learned method's weights and everything needed to use them again."""

    kind: str  # adapter | combiner | phi | oti | finetune
    model_id: str  # the encoder the weights were trained on
    dim: int
    preprocessing: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # seed, epochs done, steps, loss/metric history
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific data (OTI image ids, concepts)
    path: Path | None = None

    def description(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "model_id": self.model_id,
            "dim": self.dim,
            "preprocessing": self.preprocessing,
            "config": self.config,
            "training": self.training,
            "extra": self.extra,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def check_encoder(self, encoder: Encoder | EncoderInfo) -> None:
        """Refuse an encoder other than the one the checkpoint was trained on."""
        info = encoder.info if isinstance(encoder, Encoder) else encoder
        check_same_space(
            EmbeddingSpace(self.model_id, dim=self.dim),
            EmbeddingSpace(info.model_id, dim=info.dim),
            f"checkpoint {self.path} ({self.kind})",
            verb="was trained on",
            hint=f"load the model '{self.model_id}', and a store indexed with it",
        )


def describe(kind: str, info: EncoderInfo, preprocessing: str, config: dict[str, Any]) -> Checkpoint:
    """An empty checkpoint of ``kind`` for the encoder ``info``."""
    return Checkpoint(kind=kind, model_id=info.model_id, dim=info.dim, preprocessing=preprocessing, config=config)


# ---- paths -------------------------------------------------------------------------------------------------
def is_single_file(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _files(path: Path) -> tuple[Path, Path, Path]:
    """(description json, weights, resume folder) for a folder or single-file checkpoint path."""
    if is_single_file(path):
        return path.with_suffix(".json"), path, path.with_suffix(".resume")
    return path / DESCRIPTION_FILE, path / WEIGHTS_FILE, path / RESUME_DIR


def resume_dir(path: str | Path) -> Path:
    return _files(Path(path))[2]


def exists(path: str | Path) -> bool:
    return _files(Path(path))[0].exists()


# ---- save / load -------------------------------------------------------------------------------------------
def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` (a folder, or a ``.safetensors`` file + sidecar JSON), atomically.

    Files already in a folder (a transformers model written beside it, the resume state) are kept.
    """
    from safetensors.torch import save_file

    path = Path(path)
    description_path, weights_path, _ = _files(path)
    description_path.parent.mkdir(parents=True, exist_ok=True)
    description = checkpoint.description()
    text = json.dumps(description, indent=2, sort_keys=False, default=_json_default)
    if checkpoint.tensors or is_single_file(path):
        tensors = {name: t.detach().contiguous().cpu() for name, t in checkpoint.tensors.items()}
        tmp = _temp_sibling(weights_path)
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
        os.replace(tmp, weights_path)
    _write_text_atomic(description_path, text + "\n")
    checkpoint.path = path
    return path


def load_checkpoint(
    path: str | Path, kinds: tuple[str, ...] | str | None = None, encoder: Encoder | EncoderInfo | None = None
) -> Checkpoint:
    """Read a checkpoint; with ``kinds`` its kind must be one of them, with ``encoder`` its model must match."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    description_path, weights_path, _ = _files(path)
    if not description_path.exists() and not weights_path.exists():
        raise ModelLoadError(f"checkpoint not found: {path} (train one with `clipmath train`)")
    if description_path.exists():
        try:
            description = json.loads(description_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"checkpoint description {description_path} is unreadable: {exc}") from None
    else:  # a lone .safetensors file carries its description in its metadata
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if METADATA_KEY not in metadata:
            raise ModelLoadError(f"{weights_path} is not a clipmath checkpoint (no '{METADATA_KEY}' metadata)")
        description = json.loads(metadata[METADATA_KEY])
    if not isinstance(description, dict) or "kind" not in description or "model_id" not in description:
        raise ModelLoadError(f"{description_path} is not a clipmath checkpoint description")
    if int(description.get("format", 0)) > FORMAT_VERSION:
        raise ModelLoadError(f"checkpoint {path} has format {description['format']}; upgrade clipmath to read it")
    wanted = (kinds,) if isinstance(kinds, str) else kinds
    if wanted and description["kind"] not in wanted:
        raise ModelLoadError(
            f"checkpoint {path} holds a '{description['kind']}' model; this needs {' or '.join(wanted)} "
            f"(train it with `clipmath train {wanted[0]}`)"
        )
    tensors = load_file(str(weights_path)) if weights_path.exists() else {}
    checkpoint = Checkpoint(
        kind=description["kind"],
        model_id=description["model_id"],
        dim=int(description["dim"]),
        preprocessing=description.get("preprocessing", "clip"),
        config=description.get("config", {}),
        tensors=tensors,
        training=description.get("training", {}),
        extra=description.get("extra", {}),
        path=path,
    )
    if encoder is not None:
        checkpoint.check_encoder(encoder)
    return checkpoint


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint description")


def _temp_sibling(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _temp_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint written by :func:`save_checkpoint` (folder, or file + sidecar + resume state)."""
    path = Path(path)
    if is_single_file(path):
        for item in _files(path)[:2]:
            item.unlink(missing_ok=True)
        shutil.rmtree(_files(path)[2], ignore_errors=True)
    elif path.is_dir():
        shutil.rmtree(path)
