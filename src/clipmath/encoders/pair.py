"""The pair encoder of CLIP4IDC: one vision transformer reads the "before" and "after" images as one sequence.

Each image is cut into patch tokens by the CLIP vision tower's own patch embedding (with its class token and
position embeddings); a learned *segment* embedding (two rows: before, after) is added to every token of each image,
and the two token sequences are concatenated, so every attention layer compares the images. Outputs:

* the pair embedding: the mean of the two class-token outputs, layer-normed and projected by CLIP's visual
  projection: it lives in CLIP's joint space, next to text embeddings of difference captions (stage 1 aligns them);
* the pair's hidden states ``(B, 2·(1+P), width)``: what the caption decoder of stage 2 attends to.

Any ViT ``CLIPModel`` of transformers works (a hub name or a saved folder, through
:class:`clipmath.encoders.hf_clip.HFClipEncoder`); ``tiny-random-clip`` serves the tests.

The offline model (``offline-imagenet-minilm``: EfficientNet-Lite0 + MiniLM) is **not** supported: its image side
is a convolutional network whose last feature map (7×7×1280) could be cut into 49 "visual tokens", but there is no
pretrained transformer over image tokens to read the joint sequence. CLIP4IDC's point is to reuse CLIP's pretrained
attention across the two images; over EfficientNet tokens that transformer would have to be trained from scratch, and
its text side (a sentence-transformer mean-pooled over a 384-d space mapped by a fixed linear layer) is not a CLIP
text tower to align with. Loading it raises a one-line :class:`PairEncoderError` instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from clipmath.encoders.base import Encoder
from clipmath.errors import ModelLoadError

SEGMENTS = 2  # before, after


class PairEncoderError(ModelLoadError):
    """The encoder cannot read image pairs (it is not a ViT CLIP from transformers)."""


@dataclass
class PairOutput:
    embedding: torch.Tensor  # (B, D) in CLIP's joint space, unnormalised
    hidden_states: torch.Tensor  # (B, 2·(1+P), width)


def clip_model_of(encoder: Encoder) -> nn.Module:
    """The transformers ``CLIPModel`` inside an encoder, or a one-line error saying why there is none."""
    model = getattr(encoder, "model", None)
    vision = getattr(model, "vision_model", None)
    if vision is None or not hasattr(getattr(vision, "embeddings", None), "patch_embedding"):
        raise PairEncoderError(
            f"difference captioning needs a ViT CLIP from transformers (e.g. openai/clip-vit-base-patch32 or "
            f"tiny-random-clip); '{encoder.info.model_id}' has no vision transformer to read image pairs"
        )
    return model


class PairEncoder(nn.Module):
    """A CLIP model reading image pairs (see the module docstring); ``clip`` is shared with the encoder's model."""

    def __init__(self, clip: nn.Module, segment_std: float | None = None) -> None:
        super().__init__()
        self.clip = clip
        width = clip.config.vision_config.hidden_size
        self.segment = nn.Embedding(SEGMENTS, width)
        if segment_std is None:  # on the scale of the model's own position embeddings
            segment_std = float(clip.vision_model.embeddings.position_embedding.weight.detach().float().std())
        nn.init.normal_(self.segment.weight, std=segment_std)

    @property
    def width(self) -> int:
        return int(self.clip.config.vision_config.hidden_size)

    @property
    def text_width(self) -> int:
        return int(self.clip.config.text_config.hidden_size)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """CLIP's own weights (trained at ``lr · coef_lr``); the segment embedding is new."""
        return list(self.clip.parameters())

    def new_parameters(self) -> list[nn.Parameter]:
        return list(self.segment.parameters())

    def tokens(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """The joint input sequence: each image's class + patch tokens with positions, plus its segment row."""
        if before.shape != after.shape:
            raise ValueError(f"before and after pixel batches differ in shape: {before.shape} vs {after.shape}")
        embeddings = self.clip.vision_model.embeddings
        ids = torch.arange(SEGMENTS, device=before.device)
        segments = self.segment(ids).to(embeddings.patch_embedding.weight.dtype)
        first = embeddings(before) + segments[0]
        second = embeddings(after) + segments[1]
        return torch.cat([first, second], dim=1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> PairOutput:
        vision = self.clip.vision_model
        sequence = vision.pre_layrnorm(self.tokens(before, after))
        hidden = vision.encoder(inputs_embeds=sequence).last_hidden_state
        hidden = vision.post_layernorm(hidden)
        per_image = hidden.shape[1] // SEGMENTS
        pooled = (hidden[:, 0] + hidden[:, per_image]) / 2
        return PairOutput(self.clip.visual_projection(pooled), hidden)

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_pair_images(
    encoder: Encoder, befores: Sequence[Image.Image], afters: Sequence[Image.Image]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess matching lists of before/after images with the encoder's own image processor."""
    return encoder.load_images(list(befores)), encoder.load_images(list(afters))


def make_pair_encoder(encoder: Encoder, gradient_checkpointing: bool = False) -> PairEncoder:
    """A trainable pair encoder over a float32 *copy* of the encoder's CLIP (every training run starts from the
    same weights; the encoder itself is left untouched). Gradient checkpointing applies on CUDA only."""
    clip = copy.deepcopy(clip_model_of(encoder)).float().to(encoder.device)
    if gradient_checkpointing and encoder.device.type == "cuda":
        clip.gradient_checkpointing_enable()
    for parameter in clip.parameters():
        parameter.requires_grad_(True)
    return PairEncoder(clip).to(encoder.device)
