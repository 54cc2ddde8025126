"""MAGIC: gradient-free image-guided decoding (Su et al., "Language Models Can See: Plugging Visual Controls in Text
Generation", 2022), for any target vector of the encoder's space.

One token per step, no gradients: the LM proposes its ``k`` most likely next tokens, and each candidate ``c`` is
scored by

    (1 − α) · p_LM(c)  −  α · max_j cos(h_c, h_j)  +  β · softmax_k(cos(E(text + c), target) / T)

* ``p_LM(c)``: the LM's confidence in the candidate;
* the degeneration penalty: the largest cosine between the candidate's last-layer hidden state and those of every
  token before it (SimCTG's contrastive search: a token whose representation repeats the context is penalised);
* the magic score: the encoder's similarity between the target and the text so far with the candidate appended,
  as a distribution over the ``k`` candidates (temperature ``T``; CLIP's logit scale 100 gives T = 0.01).

The best candidate is appended; decoding stops at ``end_token``, at the LM's end-of-text, or after ``max_length``
tokens. Defaults are MAGIC's COCO settings (k = 45, α = 0.1, β = 2.0, 16 tokens). MAGIC itself starts from a
caption-tuned LM with no prompt; clipmath starts from ``cond_text`` (ZeroCap's "Image of a") so that any LM can be
used, and an LM adapted with ``clipmath train caption-lm`` brings back MAGIC's setting.

Candidates of one step share one batched LM call over the cached context and one encoder call, so a caption costs
``max_length`` small LM passes and about ``k · max_length`` text encodings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from clipmath.caption.decoders import Caption, GuidedDecoder, Progress, TokenProgress, target_tensor
from clipmath.caption.zerocap import KV, cache_arg, kv_tensors, returned_cache
from clipmath.errors import CaptionError
from clipmath.options import setting


@dataclass(frozen=True)
class MagicConfig:
    """MAGIC's options; defaults are its MSCOCO inference settings (``k 45, alpha 0.1, beta 2.0, length 16``)."""

    cond_text: str = setting("Image of a", 'Prompt the caption continues ("" for an LM adapted to captions).')
    max_length: int = setting(16, "Maximum caption length in LM tokens (MAGIC's decoding_len).")
    k: int = setting(45, "LM candidates per token.", flag="--top-k")
    alpha: float = setting(0.1, "Weight of the degeneration penalty (and 1 − alpha of the LM confidence).")
    beta: float = setting(2.0, "Weight of the target similarity (the magic score); 0 = plain contrastive search.")
    temperature: float = setting(0.01, "Temperature of the softmax over candidates' cosines.")
    end_token: str = setting(".", "Text of the token that ends a caption.")
    half_precision_text: bool = setting(True, "Text encoder in float16 on CUDA (no effect on the CPU).")
    lm_threads: int = setting(1, "CPU threads for the LM's small per-token passes (0: torch's setting).")

    def __post_init__(self) -> None:
        if self.lm_threads < 0:
            raise CaptionError(f"lm_threads must be >= 0 (got {self.lm_threads})")
        for name in ("max_length", "k", "temperature"):
            if not getattr(self, name) > 0:
                raise CaptionError(f"{name} must be positive (got {getattr(self, name)})")
        if not 0.0 <= self.alpha <= 1.0:
            raise CaptionError(f"alpha must be in [0, 1] (got {self.alpha})")
        if self.beta < 0:
            raise CaptionError(f"beta must be >= 0 (got {self.beta})")


@dataclass
class _State:
    """The text so far: its LM cache, the next-token logits, and every context token's last-layer hidden state."""

    cache: KV
    logits: torch.Tensor  # (V,)
    hidden: torch.Tensor  # (L, H)


class MagicDecoder(GuidedDecoder):
    """Caption target embeddings with one LM and one encoder, MAGIC's way; deterministic (no sampling)."""

    options_class = MagicConfig
    config: MagicConfig

    def caption(
        self,
        target_embedding: np.ndarray | torch.Tensor,
        config: MagicConfig | None = None,
        progress: Progress = False,
    ) -> list[Caption]:
        """One caption for ``target_embedding`` (``(D,)``), as a one-element list (the decoders' common shape)."""
        config = config or self.config
        started = time.perf_counter()
        target = target_tensor(target_embedding, self.encoder, self.device)
        self._texts.half = config.half_precision_text
        prefix = self.prompt_ids(config.cond_text)
        stops = set(self.vocab.stop_ids(config.end_token))
        banned = self.vocab.banned(self.device)
        prompt_text = self.lm.decode(prefix)
        tokens: list[int] = []
        log_probs: list[float] = []
        with (
            torch.no_grad(),
            TokenProgress(progress, config.max_length, "magic") as steps,
            self.lm_threads(config.lm_threads),
        ):
            state = self._start(prefix)
            for _ in range(config.max_length):
                token, log_prob, state = self._step(state, prompt_text, tokens, target, banned, config)
                tokens.append(token)
                log_probs.append(log_prob)
                steps.step()
                if token in stops:
                    break
        continuation = self.lm.decode(tokens)
        text = continuation.strip() or continuation
        score = float(self._texts([text])[0] @ target.cpu().numpy())
        seconds = time.perf_counter() - started
        return [
            Caption(
                text=text,
                prompt=config.cond_text,
                clip_score=score,
                lm_score=float(np.mean(log_probs)),
                continuation=continuation,
                tokens=tuple(tokens),
                seconds=seconds,
            )
        ]

    # ---- one step -------------------------------------------------------------------------------------------
    def _start(self, prefix: list[int]) -> _State:
        hidden, cache = self._run(torch.tensor([prefix], device=self.device), None)
        return _State(cache, self._logits(hidden[0, -1]), hidden[0])

    def _run(self, input_ids: torch.Tensor, cache: KV | None) -> tuple[torch.Tensor, KV]:
        """Last-layer hidden states ``(B, T, H)`` (float32) and the new cache. No vocabulary projection here: only
        the chosen candidate's next-token logits are needed, so the LM head runs on one row per step."""
        model = self.lm.model
        out = model.base_model(input_ids=input_ids, **cache_arg(model.base_model, cache), use_cache=True)
        return out.last_hidden_state.float(), kv_tensors(returned_cache(out))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.lm.model.get_output_embeddings()
        return head(hidden.to(head.weight.dtype)).float()

    def _step(
        self,
        state: _State,
        prompt_text: str,
        tokens: list[int],
        target: torch.Tensor,
        banned: torch.Tensor,
        config: MagicConfig,
    ) -> tuple[int, float, _State]:
        """Score the LM's top-k next tokens; return the winner, its LM log-probability, and the state after it."""
        logits = state.logits.clone()
        if banned.numel():
            logits[banned] = -float("inf")
        log_p = torch.log_softmax(logits, dim=-1)
        top_log_p, top_ids = log_p.topk(min(config.k, log_p.numel()))
        k = top_ids.numel()
        # every candidate appended to the cached context, in one batch
        cache = [(key.expand(k, *key.shape[1:]), value.expand(k, *value.shape[1:])) for key, value in state.cache]
        hidden, new_cache = self._run(top_ids[:, None], cache)
        candidate_hidden = hidden[:, -1]  # (k, H)
        penalty = _max_cosine(candidate_hidden, state.hidden)  # (k,)
        score = (1.0 - config.alpha) * top_log_p.exp() - config.alpha * penalty
        if config.beta > 0:
            so_far = prompt_text + self.lm.decode(tokens) if tokens else prompt_text
            texts = [so_far + self.vocab.texts[i] for i in top_ids.tolist()]
            sims = torch.from_numpy(self._texts(texts)).to(target.device) @ target
            score = score + config.beta * torch.softmax(sims / config.temperature, dim=-1)
        best = int(score.argmax())
        chosen = [(key[best : best + 1], value[best : best + 1]) for key, value in new_cache]
        context_hidden = torch.cat([state.hidden, candidate_hidden[best : best + 1]], dim=0)
        next_state = _State(chosen, self._logits(candidate_hidden[best]), context_hidden)
        return int(top_ids[best]), float(top_log_p[best]), next_state


def _max_cosine(candidates: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """For each candidate row, the largest cosine to any context row."""
    a = torch.nn.functional.normalize(candidates, dim=-1)
    b = torch.nn.functional.normalize(context, dim=-1)
    return (a @ b.T).max(dim=-1).values
