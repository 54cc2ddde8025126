"""CLIP through Hugging Face transformers: any ``CLIPModel`` by hub name or from a local folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipmath.encoders.base import Encoder, EncoderInfo, TokenOverrides
from clipmath.encoders.identity import folder_model_id, is_marked_random
from clipmath.encoders.pipeline import PixelSpec, clip_spec, prepare_pixels
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
    ) -> None:
        self.device = torch.device(device)
        self.dtype = inference_dtype("auto" if fp16 else dtype, self.device)
        self._threads = ThreadBudget()  # the loading thread's torch threads, applied in every calling thread
        self.model = move_model(model, self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self._spec = clip_spec(image_processor)
        self.transform = transform or ImageTransform()
        self.max_length = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        self.info = EncoderInfo(
            model_id=model_id,
            backend=backend,
            dim=int(model.config.projection_dim),
            pretrained=pretrained,
            description=f"CLIP via transformers ({type(model).__name__})",
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
        """Load a CLIP model by hub name (``openai/clip-vit-base-patch32``) or from a local folder."""
        inference_dtype("auto" if fp16 else dtype, device)  # refuse a bad dtype before the slow load
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        path = Path(name_or_path).expanduser()
        is_folder = path.is_dir()
        if not is_folder and (os.sep in name_or_path and name_or_path.count("/") != 1 or path.suffix):
            raise ModelLoadError(f"model folder not found: {name_or_path}")
        kwargs = {}
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        try:
            source = str(path) if is_folder else name_or_path
            model = CLIPModel.from_pretrained(source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            processor = CLIPImageProcessor.from_pretrained(source, **kwargs)
        except OSError as exc:
            reason = str(exc).splitlines()[0]
            if is_folder:
                raise ModelLoadError(
                    f"{path} is not a saved CLIP model folder ({reason}); it needs config.json, the weights, "
                    "the tokenizer and preprocessor_config.json as written by save_pretrained"
                ) from None
            raise ModelLoadError(
                f"could not load CLIP '{name_or_path}' from the Hugging Face hub: {reason} "
                "(offline? use the model offline-imagenet-minilm, or a local folder holding a saved CLIPModel)"
            ) from None
        except ValueError as exc:
            raise ModelLoadError(f"{name_or_path} is not a CLIP model: {str(exc).splitlines()[0]}") from None
        model_id = model_id or (_folder_model_id(path) if is_folder else name_or_path)
        pretrained = not _is_marked_random(path) if is_folder else True
        backend = "tiny-random-clip" if not pretrained else "hf-clip"
        return cls(model, tokenizer, processor, model_id, device, fp16, transform, pretrained, backend, dtype)

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
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {
            "input_ids": tokens["input_ids"].to(self.device),
            "attention_mask": tokens["attention_mask"].to(self.device),
        }

    def text_features(
        self, tokens: dict[str, torch.Tensor], token_overrides: TokenOverrides | None = None
    ) -> torch.Tensor:
        with self._override_token_inputs(token_overrides):
            out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _features(out)

    def token_embedding_table(self) -> torch.nn.Embedding:
        return self.model.text_model.embeddings.token_embedding

    def special_token_ids(self) -> list[int]:
        return [i for i in self.tokenizer.all_special_ids if i is not None]

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {
            "image": torch.nn.ModuleDict({"tower": self.model.vision_model, "proj": self.model.visual_projection}),
            "text": torch.nn.ModuleDict({"tower": self.model.text_model, "proj": self.model.text_projection}),
        }

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


def _features(output) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x returns an output object holding them."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


_is_marked_random = is_marked_random
_folder_model_id = folder_model_id
