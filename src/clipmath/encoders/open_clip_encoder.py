"""OpenCLIP models (``pip install clipmath[models]``): any ``open_clip.list_models()`` architecture with any
``list_pretrained()`` tag, an ``hf-hub:`` repo in open_clip's layout, or a local folder in that layout.

Names: ``open_clip:ViT-B-32/laion2b_s34b_b79k`` (architecture/tag), ``hf-hub:timm/ViT-B-16-SigLIP2``, or a folder
holding ``open_clip_config.json`` and the weights (``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``): the files of the model's hub repo, which is how a model reaches an offline machine.

Images are prepared as open_clip's own eval transform does (its ``preprocess_cfg``: short-side resize + centre crop
or squash, interpolation, mean/std); the fast pipeline reproduces the ``shortest`` and ``squash`` modes and the
``longest`` mode (letterbox) runs the library's transform. Texts go through the model's own tokenizer (its context
length, SigLIP's fixed-length padding and lower-casing), and embeddings are ``encode_image``/``encode_text``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipmath.encoders.base import Encoder, TokenOverrides
from clipmath.encoders.identity import EncoderInfo, folder_model_id, is_marked_random
from clipmath.encoders.pipeline import PixelSpec, describe_pixels, prepare_pixels
from clipmath.encoders.precision import inference_dtype
from clipmath.encoders.runtime import ThreadBudget, move_model
from clipmath.encoders.transforms import ImageTransform
from clipmath.errors import ModelLoadError

__all__ = ["CONFIG_FILE", "OpenClipEncoder", "import_open_clip", "is_open_clip_folder"]

#: The file that makes a folder (or a hub repo) an open_clip model.
CONFIG_FILE = "open_clip_config.json"
FOLDER_LAYOUT = (
    f"a folder holding {CONFIG_FILE} and open_clip_model.safetensors (or open_clip_pytorch_model.bin), "
    "the files of the model's hub repo"
)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def import_open_clip():
    """``open_clip``, or one line saying how to install it."""
    try:
        import open_clip
    except ImportError as exc:
        raise ModelLoadError(
            f"OpenCLIP models need the open_clip package ({exc}): pip install 'clipmath[models]'"
        ) from None
    return open_clip


@contextlib.contextmanager
def _quiet_root_logger():
    """open_clip reports through the root logger (``logging.warning``); its notes are not the user's business
    while clipmath loads a model (clipmath's own errors say what went wrong)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def is_open_clip_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


class OpenClipEncoder(Encoder):
    """An open_clip ``CLIP``/``CustomTextCLIP`` model with its eval transform and tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess,
        tokenizer,
        model_id: str,
        architecture: str,
        device: str = "cpu",
        transform: ImageTransform | None = None,
        pretrained: bool = True,
        dtype: str = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.dtype = inference_dtype(dtype, self.device)
        self._threads = ThreadBudget()
        self.model = move_model(model, self.device, self.dtype).eval()
        self.library_preprocess = preprocess
        self.tokenizer = tokenizer
        self.transform = transform or ImageTransform()
        self._spec = pixel_spec_of(model)
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        how = describe_pixels(self._spec) if self._spec else "open_clip's own transform (letterbox)"
        self.info = EncoderInfo(
            model_id=model_id,
            backend="open_clip",
            dim=_embedding_dim(model),
            pretrained=pretrained,
            description=f"OpenCLIP {architecture} ({type(model).__name__}); images: {how}",
        )

    @classmethod
    def load(
        cls,
        name: str,
        device: str = "cpu",
        transform: ImageTransform | None = None,
        dtype: str = "auto",
    ) -> OpenClipEncoder:
        """Load ``ARCH/TAG``, ``hf-hub:ORG/REPO`` or a folder in the hub layout (see the module docstring)."""
        inference_dtype(dtype, device)
        open_clip = import_open_clip()
        folder = Path(name).expanduser()
        if folder.is_dir():
            if not is_open_clip_folder(folder):
                raise ModelLoadError(f"{folder} is not an OpenCLIP model folder: it needs {FOLDER_LAYOUT}")
            if not any(p.suffix in (".safetensors", ".bin", ".pth") for p in folder.iterdir()):
                raise ModelLoadError(f"{folder} has {CONFIG_FILE} but no weights: it needs {FOLDER_LAYOUT}")
            source, pretrained_tag, model_id = f"local-dir:{folder}", None, folder_model_id(folder)
            architecture = folder.resolve().name
        elif name.startswith("hf-hub:"):
            source, pretrained_tag, model_id, architecture = name, None, name, name.removeprefix("hf-hub:")
        else:
            architecture, _, pretrained_tag = name.partition("/")
            _check_known(open_clip, architecture, pretrained_tag)
            source, model_id = architecture, f"open_clip:{name}"
        try:
            with _quiet_root_logger():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    source, pretrained=pretrained_tag, device="cpu", load_weights=True
                )
                tokenizer = open_clip.get_tokenizer(source)
        except Exception as exc:  # noqa: BLE001 - open_clip raises many kinds for a missing download
            raise ModelLoadError(_missing(name, exc)) from None
        random = folder.is_dir() and is_marked_random(folder)
        return cls(model, preprocess, tokenizer, model_id, architecture, device, transform, not random, dtype)

    # ---- protocol ------------------------------------------------------------------------------------
    def pixel_spec(self) -> PixelSpec | None:
        return self._spec

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self._spec is not None:
            return self.pixels_from_uint8(np.stack([prepare_pixels(img, self._spec) for img in images]))
        pixels = torch.stack([self.library_preprocess(img) for img in images])
        return pixels.to(self.device, self.dtype)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts)).to(self.device)
        return {"input_ids": ids, "attention_mask": (ids != self.pad_token_id()).long()}

    def text_features(
        self, tokens: dict[str, torch.Tensor], token_overrides: TokenOverrides | None = None
    ) -> torch.Tensor:
        with self._override_token_inputs(token_overrides):
            return self.model.encode_text(tokens["input_ids"])

    def token_embedding_table(self) -> torch.nn.Embedding:
        table = getattr(self.model, "token_embedding", None)  # CLIP: the text tower's table sits on the model
        if table is None:
            text = self.model.text
            table = getattr(text, "token_embedding", None)
            if table is None and hasattr(text, "transformer"):  # a Hugging Face text tower
                table = text.transformer.get_input_embeddings()
        if not isinstance(table, torch.nn.Embedding):
            raise ModelLoadError(f"{self.info.model_id}: its text tower exposes no token-embedding table")
        return table

    def pad_token_id(self) -> int:
        inner = getattr(self.tokenizer, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        return int(getattr(inner, "pad_token_id", None) or 0)

    def special_token_ids(self) -> list[int]:
        inner = getattr(self.tokenizer, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        if inner is not None and hasattr(inner, "all_special_ids"):
            return [i for i in inner.all_special_ids if i is not None]
        ids = [self.pad_token_id()]
        for name in ("sot_token_id", "eot_token_id"):
            if getattr(self.tokenizer, name, None) is not None:
                ids.append(int(getattr(self.tokenizer, name)))
        return ids

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        if hasattr(self.model, "text"):  # CustomTextCLIP: the text tower is one module
            text = self.model.text
        else:
            text = torch.nn.ModuleDict(
                {k: m for k, m in self.model.named_children() if k in ("transformer", "token_embedding", "ln_final")}
            )
        return {"image": self.model.visual, "text": text}


def pixel_spec_of(model: torch.nn.Module) -> PixelSpec | None:
    """The :class:`PixelSpec` of open_clip's eval transform for ``model``; ``None`` (use the library's transform)
    for the ``longest`` (letterbox) mode or an interpolation Pillow cannot match."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mode = cfg.get("resize_mode", "shortest")
    resample = _RESAMPLE.get(cfg.get("interpolation", "bicubic"))
    if resample is None or mode not in ("shortest", "squash") or (mode == "shortest" and height != width):
        return None
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return PixelSpec(
        short_side=max(height, width),
        crop=(height, width),
        mean=tuple(float(m) for m in cfg.get("mean", OPENAI_DATASET_MEAN)),
        std=tuple(float(s) for s in cfg.get("std", OPENAI_DATASET_STD)),
        resample=int(resample),
        squash=mode == "squash",
        crop_offset="round",  # torchvision's CenterCrop
    )


def _embedding_dim(model: torch.nn.Module) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    with torch.no_grad():
        size = dict(model.visual.preprocess_cfg)["size"]
        height, width = (size, size) if isinstance(size, int) else size
        return int(model.encode_image(torch.zeros(1, 3, height, width)).shape[-1])


def _check_known(open_clip, architecture: str, tag: str) -> None:
    if architecture not in open_clip.list_models():
        raise ModelLoadError(
            f"'{architecture}' is not an open_clip architecture (open_clip.list_models() has "
            f"{len(open_clip.list_models())}, e.g. ViT-B-32, ViT-H-14, ViT-B-16-SigLIP2, MobileCLIP2-S2)"
        )
    if not tag:
        raise ModelLoadError(
            f"open_clip:{architecture} needs a pretrained tag (open_clip:{architecture}/TAG): "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(architecture)) or 'none known'}"
        )
    tags = open_clip.list_pretrained_tags_by_model(architecture)
    if tag not in tags:
        raise ModelLoadError(f"open_clip has no '{tag}' weights for {architecture}; it has: {', '.join(tags)}")


def _missing(name: str, exc: Exception) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"could not load OpenCLIP '{name}': {reason[:300]} (offline? its weights are not in the Hugging Face "
        f"cache; bring {FOLDER_LAYOUT}, and give the folder as the model)"
    )
