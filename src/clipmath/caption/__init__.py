"""Captioning: guided LM decoding (ZeroCap, MAGIC), nearest corpus captions and DeCap for any target embedding, and
COCO caption metrics.

Python API::

    from clipmath.encoders import load_encoder
    from clipmath.caption import load_language_model, caption, PRESETS

    encoder = load_encoder("offline-imagenet-minilm")
    lm = load_language_model("smollm2-135m")            # or "gpt2-medium", a folder, "auto"
    target = encoder.encode_images([photo])[0]          # or a clipmath.compose expression vector
    for c in caption(target, lm, encoder, beam_size=5):  # ZeroCap run.py defaults, fields overridable
        print(c.full_text, c.clip_score, c.lm_score)

    from clipmath.caption import DECODERS, LANGUAGE_MODELS  # the named decoders and language models
    fast = DECODERS.get("magic").create(lm, encoder)      # gradient-free, seconds per caption
    print(fast.caption(target)[0].full_text)
    nearest = DECODERS.get("memory").create(None, encoder, corpus="captions.txt")  # no LM: corpus captions
    decap = DECODERS.get("decap").create(None, encoder, checkpoint="runs/decap")   # clipmath.train.decap

    from clipmath.caption import score_caption_file     # behind `clipmath eval-captions PRED_REFS.json`
    print(score_caption_file("preds.json").percent())
"""

from clipmath.caption.decap import DecapDecoder, DecapOptions
from clipmath.caption.decoders import DECODERS, Caption, DecoderSpec, TextEmbeddings
from clipmath.caption.language_models import (
    AUTO_LM,
    DEFAULT_LM,
    LANGUAGE_MODELS,
    SMOLLM2_NAME,
    TINY_LM_NAME,
    LanguageModel,
    LanguageModelSpec,
    language_model_spec,
    load_language_model,
    resolve_lm_name,
)
from clipmath.caption.magic import MagicConfig, MagicDecoder
from clipmath.caption.memory import CaptionMemory, MemoryConfig, MemoryDecoder
from clipmath.caption.metrics import (
    METRIC_NAMES,
    CaptionItem,
    CaptionScores,
    caption_metrics,
    read_caption_file,
    score_caption_file,
)
from clipmath.caption.zerocap import PRESETS, ZeroCapConfig, ZeroCapDecoder, caption

__all__ = [
    "AUTO_LM",
    "DECODERS",
    "DEFAULT_LM",
    "LANGUAGE_MODELS",
    "METRIC_NAMES",
    "PRESETS",
    "SMOLLM2_NAME",
    "TINY_LM_NAME",
    "Caption",
    "CaptionItem",
    "CaptionMemory",
    "CaptionScores",
    "DecapDecoder",
    "DecapOptions",
    "DecoderSpec",
    "LanguageModel",
    "LanguageModelSpec",
    "MagicConfig",
    "MagicDecoder",
    "MemoryConfig",
    "MemoryDecoder",
    "TextEmbeddings",
    "ZeroCapConfig",
    "ZeroCapDecoder",
    "caption",
    "caption_metrics",
    "language_model_spec",
    "load_language_model",
    "read_caption_file",
    "resolve_lm_name",
    "score_caption_file",
]
