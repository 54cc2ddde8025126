"""A tiny randomly initialised CLIP, built locally with a real byte-level tokenizer, for fast plumbing tests.

It goes through exactly the same loading code as a real checkpoint folder. Its retrieval numbers mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipmath.encoders.identity import RANDOM_MARKER, TINY_NAME


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol alone and as a word end, plus the two special tokens."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tiny_clip(folder: str | Path, seed: int = 0, dim: int = 32, image_size: int = 32) -> Path:
    """Write a tiny random ``CLIPModel`` + tokenizer + image processor to ``folder`` and return it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=dim,
        intermediate_size=2 * dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision = dict(
        hidden_size=dim,
        intermediate_size=2 * dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
    )
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim))
    model.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    (folder / RANDOM_MARKER).write_text(json.dumps({"seed": seed, "note": "random weights, for tests only"}))
    return folder


def tiny_clip_folder(seed: int = 0) -> Path:
    """The cached tiny model folder (built on first use under the clipmath cache)."""
    from clipmath.paths import cache_dir

    folder = cache_dir() / "models" / f"{TINY_NAME}-seed{seed}"
    if not (folder / "config.json").exists():
        build_tiny_clip(folder, seed=seed)
    return folder
