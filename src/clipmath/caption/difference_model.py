"""CLIP4IDC's captioning model: the pair encoder plus a small transformer decoder over the pair's hidden states.

The decoder (3 layers in CLIP4IDC) works at the width of CLIP's text tower and starts from CLIP's token embeddings
(tied input/output embeddings); a linear layer maps the vision tower's hidden states to that width. It is trained
with teacher forcing (stage 2, :mod:`clipmath.train.idc`) and decodes with beam search.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from clipmath.encoders.base import Encoder
from clipmath.encoders.pair import PairEncoder


class CaptionDecoder(nn.Module):
    """A pre-norm transformer decoder with learned positions and output logits tied to its token embeddings."""

    def __init__(
        self,
        token_embeddings: torch.Tensor,
        memory_width: int,
        layers: int = 3,
        heads: int | None = None,
        max_tokens: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        vocab, width = token_embeddings.shape
        self.max_tokens = max_tokens
        self.token = nn.Embedding(vocab, width)
        with torch.no_grad():
            self.token.weight.copy_(token_embeddings)
        self.position = nn.Embedding(max_tokens + 1, width)
        nn.init.normal_(self.position.weight, std=0.01)
        self.memory = nn.Linear(memory_width, width)
        heads = heads or max(1, width // 64)
        layer = nn.TransformerDecoderLayer(
            width, heads, 4 * width, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.layers = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(width)

    def forward(
        self, input_ids: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits ``(B, L, vocab)`` for ``input_ids`` ``(B, L)`` attending to ``memory`` ``(B, M, W)``."""
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        x = self.token(input_ids) + self.position(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=input_ids.device, dtype=x.dtype)
        h = self.layers(x, self.memory(memory), tgt_mask=causal, tgt_key_padding_mask=padding, tgt_is_causal=True)
        return self.norm(h) @ self.token.weight.T


class DifferenceCaptioner(nn.Module):
    """Pair encoder + caption decoder; ``bos_id``/``eos_id`` are the tokenizer's start and end tokens."""

    def __init__(self, pair: PairEncoder, decoder: CaptionDecoder, bos_id: int, eos_id: int) -> None:
        super().__init__()
        self.pair = pair
        self.decoder = decoder
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return self.pair.pretrained_parameters()

    def new_parameters(self) -> list[nn.Parameter]:
        return self.pair.new_parameters() + list(self.decoder.parameters())

    def loss(
        self, before: torch.Tensor, after: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy; ``targets`` is ``input_ids`` shifted left, ``-100`` where padded."""
        memory = self.pair(before, after).hidden_states
        logits = self.decoder(input_ids, memory)  # padding only follows a caption: the causal mask hides it
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(
        self, before: torch.Tensor, after: torch.Tensor, beam_size: int = 3, max_tokens: int | None = None
    ) -> list[list[int]]:
        """Beam search: the best token ids (without start/end tokens) for each pair of the batch."""
        hidden = self.pair(before, after).hidden_states
        return beam_search(self.decoder, hidden, self.bos_id, self.eos_id, beam_size, max_tokens)


def beam_search(
    decoder: CaptionDecoder,
    memory: torch.Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 3,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Batched beam search ranking beams by mean token log-probability (the end token counted once).

    A plain sum favours short captions ("no change") over every longer one; the mean does not. A finished beam keeps
    its score: it only extends with the end token, at no cost and no added length.
    """
    max_tokens = min(max_tokens or decoder.max_tokens, decoder.max_tokens)
    batch, k = memory.shape[0], max(1, beam_size)
    device = memory.device
    memory = memory.repeat_interleave(k, dim=0)
    sequences = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
    sums = torch.zeros(batch * k, device=device)
    lengths = torch.zeros(batch * k, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    alive = torch.zeros(batch, k, dtype=torch.bool, device=device)
    alive[:, 0] = True  # all beams start identical: keep one
    for _ in range(max_tokens):
        log_probs = F.log_softmax(decoder(sequences, memory)[:, -1].float(), dim=-1)
        log_probs[finished] = float("-inf")
        log_probs[finished, eos_id] = 0.0
        vocab = log_probs.shape[-1]
        new_sums = sums[:, None] + log_probs
        new_lengths = lengths[:, None] + (~finished).float()[:, None]
        mean = (new_sums / new_lengths.clamp(min=1)).masked_fill(~alive.reshape(-1, 1), float("-inf"))
        _, flat = mean.reshape(batch, k * vocab).topk(k, dim=-1)
        beam, token = flat // vocab, flat % vocab
        rows = (torch.arange(batch, device=device)[:, None] * k + beam).flatten()
        picked = (rows, token.flatten())
        sums, lengths = new_sums[picked], new_lengths[rows, 0]
        alive = torch.isfinite(mean.reshape(batch, k * vocab).gather(1, flat))
        sequences = torch.cat([sequences[rows], token.flatten()[:, None]], dim=1)
        finished = finished[rows] | token.flatten().eq(eos_id)
        if bool(finished[alive.flatten()].all()):
            break
    scores = (sums / lengths.clamp(min=1)).reshape(batch, k).masked_fill(~alive, float("-inf"))
    best = scores.argmax(dim=-1)
    out = []
    for b in range(batch):
        ids = sequences[b * k + int(best[b]), 1:].tolist()
        out.append(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    return out


def build_captioner(
    pair: PairEncoder,
    encoder: Encoder,
    layers: int = 3,
    heads: int | None = None,
    max_tokens: int = 32,
    dropout: float = 0.1,
) -> DifferenceCaptioner:
    """A captioner over ``pair``; its decoder starts from the CLIP text tower's token embeddings."""
    clip = pair.clip
    tokenizer = encoder.tokenizer
    text_config = clip.config.text_config
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else text_config.bos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else text_config.eos_token_id
    token_embeddings = clip.text_model.embeddings.token_embedding.weight.detach().float()
    decoder = CaptionDecoder(token_embeddings, pair.width, layers, heads, max_tokens, dropout)
    return DifferenceCaptioner(pair, decoder, bos, eos).to(encoder.device)


def caption_token_ids(
    tokenizer, captions: Sequence[str], max_tokens: int, bos_id: int, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs ``[BOS] w1 .. wn`` and targets ``w1 .. wn [EOS]`` (``-100`` after), ``(B, L)`` each.

    Captions are cut to ``max_tokens - 1`` tokens (CLIP4IDC's ``max_words`` counts the end token).
    """
    bodies = [tokenizer(c, add_special_tokens=False)["input_ids"][: max_tokens - 1] for c in captions]
    length = max(len(b) for b in bodies) + 1
    inputs = torch.full((len(bodies), length), eos_id, dtype=torch.long)
    targets = torch.full((len(bodies), length), -100, dtype=torch.long)
    for row, body in enumerate(bodies):
        inputs[row, : len(body) + 1] = torch.tensor([bos_id] + body)
        targets[row, : len(body) + 1] = torch.tensor(body + [eos_id])
    return inputs, targets


def decode_tokens(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()
