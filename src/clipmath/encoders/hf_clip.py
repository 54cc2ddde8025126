"""Dual encoders through Hugging Face transformers, by hub name or from a local folder: ``CLIPModel`` and the
families in :data:`HF_FAMILIES` (SigLIP and fixed-resolution SigLIP 2, ChineseCLIP, AltCLIP).

The model class is picked from the checkpoint's ``config.json`` ``model_type``, never from the name's spelling. The
image processor is transformers' Pillow one (``backend="pil"``), which the fast pipeline reproduces; the tokenizer
pads as the family was trained (SigLIP: always to its 64 positions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipmath.encoders.base import Encoder, EncoderInfo, TokenOverrides
from clipmath.encoders.families import HF_FAMILIES, HF_UNSUPPORTED
from clipmath.encoders.identity import folder_model_id, is_marked_random
from clipmath.encoders.pipeline import PixelSpec, clip_spec, describe_pixels, prepare_pixels
from clipmath.encoders.precision import inference_dtype
from clipmath.encoders.runtime import ThreadBudget, move_model
from clipmath.encoders.transforms import ImageTransform
from clipmath.errors import ModelLoadError

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


class HFClipEncoder(Encoder):
    """A transformers ``CLIPModel`` with its tokenizer and image processor.

    ``dtype`` (``auto|float32|float16|bfloat16``, see :mod:`clipmath.encoders.precision`) is the weights' and
    pixels' precision; ``fp16=True`` is the old spelling of ``auto``. Works with transformers 4.x (features
    returned as tensors) and 5.x (features in ``.pooler_output``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        image_processor,
        model_id: str,
        device: str | torch.device = "cpu",
        fp16: bool = False,
        transform: ImageTransform | None = None,
        pretrained: bool = True,
        backend: str = "hf-clip",
        dtype: str | torch.dtype = "auto",
        family: str = "clip",
    ) -> None:
        self.device = torch.device(device)
        self.dtype = inference_dtype("auto" if fp16 else dtype, self.device)
        self._threads = ThreadBudget()  # the loading thread's torch threads, applied in every calling thread
        self.model = move_model(model, self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self._spec = clip_spec(image_processor)
        self.transform = transform or ImageTransform()
        self.family = HF_FAMILIES[family]
        self.max_length = _context_length(model, tokenizer)
        self.info = EncoderInfo(
            model_id=model_id,
            backend=backend,
            dim=_embedding_dim(model.config),
            pretrained=pretrained,
            description=f"{self.family.label} via transformers ({type(model).__name__}); images: "
            f"{describe_pixels(self._spec) if self._spec else type(image_processor).__name__}",
        )

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str = "cpu",
        fp16: bool = False,
        transform: ImageTransform | None = None,
        local_files_only: bool | None = None,
        model_id: str | None = None,
        dtype: str | torch.dtype = "auto",
    ) -> HFClipEncoder:
        """Load a model by hub name (``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``) or
        from a local folder; the family comes from its ``config.json``'s ``model_type``."""
        inference_dtype("auto" if fp16 else dtype, device)  # refuse a bad dtype before the slow load
        import transformers

        path = Path(name_or_path).expanduser()
        is_folder = path.is_dir()
        if not is_folder and (os.sep in name_or_path and name_or_path.count("/") != 1 or path.suffix):
            raise ModelLoadError(f"model folder not found: {name_or_path}")
        if is_folder and not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a saved model folder (no config.json): a transformers model needs config.json, the "
                "weights, the tokenizer and preprocessor_config.json as save_pretrained writes them; an OpenCLIP "
                "model needs open_clip_config.json and its weights"
            )
        kwargs = {}
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        try:
            source = str(path) if is_folder else name_or_path
            family = _family(transformers.AutoConfig.from_pretrained(source, **kwargs).model_type, name_or_path)
            model = getattr(transformers, HF_FAMILIES[family].model_class).from_pretrained(source, **kwargs)
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            processor = _pil_image_processor(source, kwargs)
        except OSError as exc:
            reason = str(exc).splitlines()[0]
            if is_folder:
                raise ModelLoadError(
                    f"{path} is not a saved model folder ({reason}); it needs config.json, the weights, "
                    "the tokenizer and preprocessor_config.json as written by save_pretrained"
                ) from None
            raise ModelLoadError(
                f"could not load '{name_or_path}' from the Hugging Face hub: {reason} (offline? bring the model "
                "as a folder: config.json, model.safetensors, the tokenizer files and preprocessor_config.json, "
                "as save_pretrained writes them or the hub repo holds them; or use the model offline-imagenet-minilm)"
            ) from None
        except ValueError as exc:
            raise ModelLoadError(f"{name_or_path} is not a supported model: {str(exc).splitlines()[0]}") from None
        model_id = model_id or (_folder_model_id(path) if is_folder else name_or_path)
        pretrained = not _is_marked_random(path) if is_folder else True
        backend = ("tiny-random-clip" if family == "clip" else f"hf-{family}") if not pretrained else f"hf-{family}"
        return cls(model, tokenizer, processor, model_id, device, fp16, transform, pretrained, backend, dtype, family)

    # ---- protocol ------------------------------------------------------------------------------------
    def pixel_spec(self) -> PixelSpec | None:
        return self._spec

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self._spec is not None:
            return self.pixels_from_uint8(np.stack([prepare_pixels(img, self._spec) for img in images]))
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts), padding=self.family.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = tokens["input_ids"]
        mask = tokens.get("attention_mask", torch.ones_like(ids))
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def text_features(
        self, tokens: dict[str, torch.Tensor], token_overrides: TokenOverrides | None = None
    ) -> torch.Tensor:
        with self._override_token_inputs(token_overrides):
            if self.family.padding == "max_length":  # SigLIP was trained without a padding mask
                out = self.model.get_text_features(input_ids=tokens["input_ids"])
            else:
                out = self.model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                )
        return _features(out)

    def token_embedding_table(self) -> torch.nn.Embedding:
        return self.model.get_submodule(self.family.token_table)

    def special_token_ids(self) -> list[int]:
        return [i for i in self.tokenizer.all_special_ids if i is not None]

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        def tower(name: str, projection: str) -> torch.nn.ModuleDict:
            parts = {"tower": getattr(self.model, name)}
            if isinstance(getattr(self.model, projection, None), torch.nn.Module):
                parts["proj"] = getattr(self.model, projection)
            return torch.nn.ModuleDict(parts)

        return {"image": tower("vision_model", "visual_projection"), "text": tower("text_model", "text_projection")}

    def enable_gradient_checkpointing(self) -> None:
        """Trade compute for memory when fine-tuning the towers."""
        enable = (
            getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
        )
        enable()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a folder that :meth:`load` (and plain transformers) can read back."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


def _family(model_type: str, name: str) -> str:
    if model_type in HF_FAMILIES:
        return model_type
    if model_type in HF_UNSUPPORTED:
        raise ModelLoadError(f"{name}: {HF_UNSUPPORTED[model_type]}")
    known = ", ".join(HF_FAMILIES)
    raise ModelLoadError(f"{name} is a '{model_type}' model, not an image-text dual encoder clipmath runs ({known})")


def _pil_image_processor(source: str, kwargs: dict):
    """transformers' Pillow image processor (the one the fast pipeline reproduces), whether or not torchvision is
    installed (transformers 5 otherwise picks its torchvision one when it can)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
    except TypeError:  # transformers 4.x: no backends, the default processor is the Pillow one
        return AutoImageProcessor.from_pretrained(source, **kwargs)


def _embedding_dim(config) -> int:
    """The joint space's dimension: the projection's width, or (SigLIP, no projection) the text tower's width."""
    projection = getattr(config, "projection_dim", None)
    return int(projection if projection else config.text_config.hidden_size)


def _context_length(model: torch.nn.Module, tokenizer) -> int:
    """Positions the text tower has, or fewer if the tokenizer was made for fewer (Chinese-CLIP: 52)."""
    positions = int(getattr(model.config.text_config, "max_position_embeddings", 77))
    if getattr(model.config, "model_type", "") in ("altclip",):
        positions -= 2  # XLM-R reserves the first two positions (padding offset)
    limit = getattr(tokenizer, "model_max_length", None)
    return min(positions, int(limit)) if isinstance(limit, int) and 0 < limit < 10**6 else positions


def _features(output) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x returns an output object holding them."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


_is_marked_random = is_marked_random
_folder_model_id = folder_model_id
