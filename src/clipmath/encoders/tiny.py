"""A tiny randomly initialised CLIP, built locally with a real byte-level tokenizer, for fast plumbing tests.

It goes through exactly the same loading code as a real checkpoint folder. Its retrieval numbers mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipmath.encoders.identity import RANDOM_MARKER, TINY_NAME


def byte_vocab() -> dict[str, int]:
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
    return save_random_clip(
        folder, byte_vocab(), [], seed=seed, dim=dim, image_size=image_size, note="random weights, for tests only"
    )


def save_random_clip(
    folder: str | Path,
    vocab: dict[str, int],
    merges: list[str],
    *,
    seed: int,
    dim: int,
    image_size: int,
    note: str,
    patch_size: int = 8,
    layers: int = 2,
    heads: int = 2,
    loud_positions: bool = False,
) -> Path:
    """Write a randomly initialised ``CLIPModel`` (``layers`` x ``heads``, width ``dim``, both towers) with a
    tokenizer of ``vocab`` and BPE ``merges``, an image processor and the random-weights marker; return ``folder``.

    ``loud_positions``: vision position embeddings as loud as patch contents (CLIP's init makes them ~50x quieter),
    so that a random model can tell which patch of one image matches which patch of another from the start."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{merge}\n" for merge in merges))
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    tower = dict(hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=layers, num_attention_heads=heads)
    text = dict(
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **tower,
    )
    vision = dict(image_size=image_size, patch_size=patch_size, **tower)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim))
    if loud_positions:
        with torch.no_grad():
            model.vision_model.embeddings.position_embedding.weight.normal_(std=1.0)
    model.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    (folder / RANDOM_MARKER).write_text(json.dumps({"seed": seed, "note": note}))
    return folder


def tiny_clip_folder(seed: int = 0) -> Path:
    """The cached tiny model folder (built on first use under the clipmath cache)."""
    from clipmath.paths import cache_dir

    folder = cache_dir() / "models" / f"{TINY_NAME}-seed{seed}"
    if not (folder / "config.json").exists():
        build_tiny_clip(folder, seed=seed)
    return folder
