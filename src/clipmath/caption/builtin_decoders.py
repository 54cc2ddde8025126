"""The built-in caption decoders, registered in :data:`clipmath.caption.decoders.DECODERS` on its first use."""

from __future__ import annotations

from clipmath.caption.decoders import DECODERS, DecoderSpec

DECODERS.register("zerocap", DecoderSpec(
    "zerocap",
    "ZeroCap: beam search, the LM's context shifted by gradient steps toward the target (slow, the paper's)",
    "clipmath.caption.zerocap:ZeroCapDecoder",
    "clipmath.caption.zerocap:ZeroCapConfig",
    title="ZeroCap",
    presets="clipmath.caption.zerocap:PRESETS",
))  # fmt: skip
DECODERS.register("magic", DecoderSpec(
    "magic",
    "MAGIC: no gradients; each token picked among the LM's top k by confidence, a degeneration penalty and "
    "similarity to the target (fast)",
    "clipmath.caption.magic:MagicDecoder",
    "clipmath.caption.magic:MagicConfig",
    title="MAGIC",
))  # fmt: skip
DECODERS.register("memory", DecoderSpec(
    "memory",
    "nearest captions of a text corpus (option corpus): no language model, no training, milliseconds",
    "clipmath.caption.memory:MemoryDecoder",
    "clipmath.caption.memory:MemoryConfig",
    title="nearest caption",
    uses_lm=False,
))  # fmt: skip
DECODERS.register("decap", DecoderSpec(
    "decap",
    "DeCap: a small decoder trained on captions alone (option checkpoint), decoding the target projected onto a "
    "memory of corpus captions; one forward pass per word",
    "clipmath.caption.decap:DecapDecoder",
    "clipmath.caption.decap:DecapOptions",
    title="DeCap",
    uses_lm=False,
))  # fmt: skip
