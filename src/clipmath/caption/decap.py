"""DeCap (Li et al., ICLR 2023): a small caption decoder trained on text alone, decoding from a projected embedding.

Training (:mod:`clipmath.train.decap`): a transformer decoder, trained from scratch, learns to write each corpus
caption from the frozen encoder's embedding of that same caption (the embedding is the decoder's first position, a
*prefix*). No image is seen. CapDec's variant adds Gaussian noise to the prefix in training (``noise_variance``).

Decoding (:class:`DecapDecoder`): an image embedding does not lie where text embeddings do (the modality gap), so it
is first projected onto a memory of corpus text embeddings — ``normalise(Σ softmax(v·t_i / τ) t_i)``, τ = 0.01 over
the whole memory as in the paper (:meth:`clipmath.caption.memory.CaptionMemory.project`) — and the projection is
decoded, greedily or with beam search. Any vector of the space can be captioned this way (an image, an expression,
an image difference).

The vocabulary is a word-level one learnt from the training corpus (``tokenizers``' WordLevel, lower-cased, words
seen at least twice), stored in the checkpoint: a few thousand words keep the output layer small enough to train on
a CPU.

    decoder = DECODERS.get("decap").create(None, encoder, checkpoint="runs/decap")
    print(decoder.caption(encoder.encode_images([photo])[0])[0].text)
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clipmath.caption.decoders import Caption, Progress, target_tensor, torch_threads
from clipmath.caption.difference_model import beam_search
from clipmath.caption.memory import DECAP_TEMPERATURE, CaptionMemory, read_corpus
from clipmath.encoders.base import Encoder
from clipmath.errors import CaptionError
from clipmath.options import setting

KIND = "decap"
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD, UNK, BOS, EOS = range(4)


class DecapBlock(nn.Module):
    """One pre-norm causal self-attention block (``scaled_dot_product_attention``, GELU MLP of 4× width)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + F.dropout(self.out(attended.transpose(1, 2).reshape(batch, length, width)), p, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), p, self.training)


class DecapModel(nn.Module):
    """A causal pre-norm transformer whose first position is the projected embedding; tied output embeddings.

    ``forward(input_ids, prefix)``: ``input_ids`` ``(B, L)`` start with the start token, whose place the prefix
    ``(B, D)`` takes; the logits ``(B, L, vocab)`` at position ``i`` predict token ``i + 1``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        width: int = 256,
        layers: int = 2,
        heads: int = 4,
        max_tokens: int = 24,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.prefix = nn.Linear(embed_dim, width)
        self.token = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token.weight, std=0.02)
        self.position = nn.Embedding(max_tokens + 1, width)
        nn.init.normal_(self.position.weight, std=0.01)
        self.blocks = nn.ModuleList(DecapBlock(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, input_ids: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        tokens = self.token(input_ids[:, 1:])
        x = torch.cat([self.prefix(prefix.to(tokens.dtype))[:, None], tokens], dim=1)
        x = x + self.position(torch.arange(length, device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.token.weight.T


# ---- the vocabulary -------------------------------------------------------------------------------------------
def train_vocabulary(texts: Sequence[str], min_count: int = 2, max_size: int = 20_000):
    """A word-level ``tokenizers.Tokenizer`` of the corpus (lower-cased; words and punctuation split)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIALS[UNK]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=max_size + len(SPECIALS), min_frequency=min_count, special_tokens=list(SPECIALS), show_progress=False
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    return tokenizer


def load_vocabulary(serialised: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(serialised)


def token_ids(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each caption's word ids, cut to ``max_tokens - 1`` (the end token takes the last place)."""
    return [encoding.ids[: max_tokens - 1] for encoding in tokenizer.encode_batch(list(texts))]


def teacher_forcing(bodies: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[BOS] w1 .. wn`` and targets ``w1 .. wn [EOS]`` (``-100`` where padded), ``(B, L)`` each."""
    length = max(len(b) for b in bodies) + 1
    inputs = torch.full((len(bodies), length), PAD, dtype=torch.long)
    targets = torch.full((len(bodies), length), -100, dtype=torch.long)
    for row, body in enumerate(bodies):
        inputs[row, : len(body) + 1] = torch.tensor([BOS, *body])
        targets[row, : len(body) + 1] = torch.tensor([*body, EOS])
    return inputs, targets


_SPACE_BEFORE = re.compile(r"\s+([.,!?;:'])")


def detokenise(tokenizer, ids: Sequence[int]) -> str:
    """Words joined by spaces, no space before punctuation."""
    words = [tokenizer.id_to_token(int(i)) for i in ids if int(i) >= len(SPECIALS)]
    return _SPACE_BEFORE.sub(r"\1", " ".join(words)).strip()


# ---- a trained DeCap ------------------------------------------------------------------------------------------
class TrainedDecap:
    """A DeCap checkpoint's model and vocabulary, for the encoder it was trained on."""

    def __init__(self, model: DecapModel, tokenizer, corpus: dict, path: Path | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.corpus = corpus  # {"path", "sha256", "count"} of the training captions
        self.path = path

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder) -> TrainedDecap:
        """Load ``path``; refuses a checkpoint trained for another encoder."""
        from clipmath.compose.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path, kinds=(KIND,), encoder=encoder)
        model = build_model(checkpoint.config, checkpoint.extra["vocab_size"], checkpoint.dim)
        model.load_state_dict(checkpoint.tensors)
        for param in model.parameters():
            param.requires_grad_(False)
        tokenizer = load_vocabulary(checkpoint.extra["tokenizer"])
        return cls(model, tokenizer, dict(checkpoint.extra.get("corpus", {})), Path(path))

    @torch.no_grad()
    def generate(self, prefixes: torch.Tensor, beam_size: int = 1, max_tokens: int | None = None) -> list[str]:
        """Captions of unit prefix rows ``(B, D)`` (already projected when they come from images)."""
        ids = beam_search(self.model, prefixes.float(), BOS, EOS, beam_size, max_tokens)
        return [detokenise(self.tokenizer, row) for row in ids]

    @torch.no_grad()
    def mean_log_probability(self, prefix: torch.Tensor, text: str) -> float:
        """Mean log-probability per token (the end token included) of ``text`` given one prefix ``(D,)``."""
        body = token_ids(self.tokenizer, [text], self.model.max_tokens)
        inputs, targets = teacher_forcing(body)
        logits = self.model(inputs, prefix.reshape(1, -1).float())
        return -float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100))


def build_model(config: dict, vocab_size: int, embed_dim: int) -> DecapModel:
    """The model a DeCap training config describes (``width``, ``layers``, ``heads``, ``max_tokens``, ``dropout``)."""
    return DecapModel(
        vocab_size,
        embed_dim,
        width=int(config["width"]),
        layers=int(config["layers"]),
        heads=int(config["heads"]),
        max_tokens=int(config["max_tokens"]),
        dropout=float(config["dropout"]),
    )


@dataclass
class DecapOptions:
    """Options of the ``decap`` decoder (defaults: the DeCap paper's inference)."""

    checkpoint: str | None = setting(None, "The trained decoder's folder (clipmath train decap).")
    corpus: str | None = setting(
        None, "The memory's captions: one a line, or JSON (default: the corpus the checkpoint was trained on)."
    )
    temperature: float = setting(DECAP_TEMPERATURE, "Softmax temperature of the projection (DeCap: 0.01).", minimum=0)
    memory_size: int | None = setting(
        None, "Use the first N corpus captions as the memory (default: all, as DeCap).", minimum=1
    )
    nearest: int | None = setting(None, "Weigh only the N most similar memory captions (default: all).", minimum=1)
    projection: bool = setting(
        True, "Project the target onto the memory (off: decode the target itself, CapDec's inference)."
    )
    beam_size: int = setting(1, "Beams (1: greedy, as DeCap).", minimum=1)
    max_length: int | None = setting(None, "Caption length limit in words (default: the checkpoint's).", minimum=1)
    decoder_threads: int = setting(
        1, "CPU threads while decoding a caption (projection, per-word passes, score; 0: torch's setting).", minimum=0
    )


class DecapDecoder:
    """DeCap decoding of any vector of the encoder's space (``lm`` is not used: any value, ``None`` included)."""

    options_class = DecapOptions

    def __init__(
        self, lm: object, encoder: Encoder, config: DecapOptions | None = None, memory: CaptionMemory | None = None
    ) -> None:
        self.encoder = encoder
        self.config = config if config is not None else DecapOptions()
        if not self.config.checkpoint:
            raise CaptionError("the decap decoder needs a trained checkpoint (the 'checkpoint' option)")
        self.trained = TrainedDecap.load(self.config.checkpoint, encoder)
        self.memory = memory
        if memory is None and self.config.projection:
            corpus = self.config.corpus or self.trained.corpus.get("path")
            if not corpus or not Path(corpus).is_file():
                raise CaptionError(
                    f"the decap memory corpus {corpus!r} (recorded in {self.config.checkpoint}) is not here: "
                    "give the 'corpus' option"
                )
            self.memory = CaptionMemory.build(read_corpus(corpus), encoder, str(corpus), progress=True)
        if self.memory is not None:
            self.memory.check_space(encoder)

    def caption(
        self,
        target_embedding: np.ndarray | torch.Tensor,
        config: DecapOptions | None = None,
        progress: Progress = False,
    ) -> list[Caption]:
        config = config or self.config
        started = time.perf_counter()
        with torch_threads(config.decoder_threads):  # one vector, a few rows per pass: more threads only wait
            target = target_tensor(target_embedding, self.encoder, torch.device("cpu"))
            prefix = target
            if config.projection:
                memory = self.memory.subset(config.memory_size)
                prefix = memory.project(target, config.temperature, config.nearest)
            text = self.trained.generate(prefix[None], config.beam_size, config.max_length)[0]
            lm_score = self.trained.mean_log_probability(prefix, text)
            clip_score = float(self.encoder.encode_texts([text])[0] @ target.numpy()) if text else 0.0
        seconds = time.perf_counter() - started
        return [Caption(text, "", clip_score, lm_score, continuation=text, seconds=seconds)]
