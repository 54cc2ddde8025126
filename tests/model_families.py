"""Tiny random-weight models of real architectures, one per family, written as the folders users bring.

Widths and depths are shrunk (the architecture, tokenizer and preprocessing are the real ones), so the tests are fast.
OpenCLIP models use open_clip's bundled CLIP tokenizer. The transformers SigLIP, SigLIP 2 and Chinese-CLIP
tokenizers are sentencepiece / WordPiece vocabularies that cannot be downloaded here: each test builds a small local
vocabulary from the captions (:func:`local_tokenizer`) with the family's special tokens and padding, and says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from clipmath.encoders.identity import RANDOM_MARKER

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "examples" / "gallery"
PHOTOS = sorted((GALLERY / "coco").glob("*.jpg"))[:4] + sorted((GALLERY / "skimage").glob("*"))[:2]
CAPTIONS = [
    "A young girl is preparing to blow out her candle.",
    "Wooden spoons are lined up on a table",
    "a photo of a cat",
    "An astronaut in a white suit",
]
CJK_CAPTIONS = ["一只猫的照片", "桌子上的木勺", "宇航员", "a photo of a cat"]
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}
#: OpenCLIP architectures, shrunk: ViT-B-32's patch and image size; ConvNeXt's smallest timm trunk.
OPEN_CLIP_CONFIGS = {
    "ViT-B-32": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
        "text_cfg": _TINY_TEXT,
    },
    "convnext": {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
            "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": 224,
        },
        "text_cfg": _TINY_TEXT,
    },
}  # fmt: skip
#: open_clip's defaults for these architectures (OpenAI mean/std, bicubic, short side + centre crop).
OPEN_CLIP_PREPROCESS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def open_clip_folder(root: Path, arch: str = "ViT-B-32", seed: int = 0, resize_mode: str = "shortest") -> Path:
    """An OpenCLIP hub-layout folder (``open_clip_config.json`` + ``open_clip_model.safetensors``), random weights."""
    import open_clip
    from safetensors.torch import save_file

    folder = root / f"open_clip-{arch}-{resize_mode}-{seed}"
    if (folder / "open_clip_model.safetensors").exists():
        return folder
    folder.mkdir(parents=True)
    config = {
        "model_cfg": OPEN_CLIP_CONFIGS[arch],
        "preprocess_cfg": {**OPEN_CLIP_PREPROCESS, "resize_mode": resize_mode},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / RANDOM_MARKER).write_text("{}")
    return folder


def local_tokenizer(texts: list[str], kind: str):
    """A small WordPiece-free word-level vocabulary of ``texts`` with a family's special tokens (a stand-in for the
    real sentencepiece / WordPiece files, which cannot be downloaded here): ``siglip`` (lower-cased, ``</s>``
    appended, ``</s>`` pads), ``siglip2`` (cased, ``<bos>`` first, ``<eos>`` last, ``<pad>`` pads) or ``bert``
    (Chinese-CLIP: ``[CLS] ... [SEP]``, CJK characters split one by one)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {
        "siglip": {"pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>"},
        "siglip2": {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"},
        "bert": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"},
    }[kind]
    words = {w for t in texts + ["$"] for w in re.findall(r"\w+|[^\w\s]", t if kind == "siglip2" else t.lower())}
    if kind == "bert":
        words |= {c for t in texts for c in t if "\u4e00" <= c <= "\u9fff"}
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials.values(), *sorted(words)]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    if kind != "siglip2":
        tok.normalizer = normalizers.Lowercase()
    split = [pre_tokenizers.Whitespace()]
    if kind == "bert":
        split.insert(0, pre_tokenizers.BertPreTokenizer())
    tok.pre_tokenizer = pre_tokenizers.Sequence(split)
    if kind == "siglip":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    elif kind == "siglip2":
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def hf_folder(root: Path, family: str, seed: int = 0) -> Path:
    """A transformers ``save_pretrained`` folder of a tiny random ``family`` model (``siglip``, ``siglip2`` — a
    fixed-resolution SigLIP 2, which transformers runs as ``SiglipModel`` with a Gemma-style vocabulary — or
    ``chinese_clip``) with its local tokenizer and the family's Pillow image processor."""
    import transformers as t

    folder = root / f"hf-{family}-{seed}"
    if (folder / "config.json").exists():
        return folder
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision = {**tower, "image_size": 224, "patch_size": 32}
    if family in ("siglip", "siglip2"):
        tokenizer = local_tokenizer(CAPTIONS, family)
        text = {**tower, "vocab_size": len(tokenizer), "max_position_embeddings": 64}
        text["pad_token_id"] = tokenizer.pad_token_id
        config = t.SiglipConfig(text_config=text, vision_config=vision)
        model_class, processor = t.SiglipModel, t.SiglipImageProcessorPil()
        tokenizer.model_max_length = 64
    elif family == "chinese_clip":
        tokenizer = local_tokenizer(CJK_CAPTIONS + CAPTIONS, "bert")
        text = {**tower, "vocab_size": len(tokenizer), "max_position_embeddings": 64}
        config = t.ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
        model_class, processor = t.ChineseCLIPModel, t.ChineseCLIPImageProcessorPil()
        tokenizer.model_max_length = 52
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / RANDOM_MARKER).write_text("{}")
    return folder
