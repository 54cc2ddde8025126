"""ZeroCap: zero-shot captioning by CLIP-guided decoding of a frozen causal language model.

Method (Tewel et al., "Zero-Shot Image-to-Text Generation for Visual-Semantic Arithmetic", CVPR 2022): beam search
over a frozen LM. Before each new token, the LM's key/value cache of the text so far is nudged for a few gradient
steps so that the next-token distribution

* puts its mass on continuations whose text (prompt + caption so far + candidate token) the image-text encoder
  places close to the target embedding: cross-entropy against softmax(cosine / temperature) over the LM's top
  candidates (the "CLIP loss"), and
* stays close to the unmodified LM: KL(shifted ‖ original), weighted by ``ce_scale`` (the fluency term).

The shifted distribution is then fused with the unmodified one (``fusion_factor``), the end token is favoured a
little more at every step (``end_factor``), numerals are discouraged (``forbidden_factor``; ZeroCap's
``forbidden_tokens.npy`` lists GPT-2's numeral tokens, here they are found in any LM's vocabulary), and beam search
ranks beams by mean log-probability. A caption ends at ``end_token`` or at the LM's end-of-text token; special
tokens and line breaks are never generated (a caption is one line of text; SmolLM2 otherwise likes line breaks).

The target is any vector of the encoder's space: an image embedding, or weighted images and texts (visual-semantic
arithmetic, see :mod:`clipmath.compose.expression`).

Works with any transformers causal LM whose cache is a ``DynamicCache`` (GPT-2, GPT-Neo, Llama/SmolLM2, ...) and
with any :class:`~clipmath.encoders.base.Encoder`.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from clipmath.caption.decoders import Caption, GuidedDecoder, Progress, TokenProgress, target_tensor
from clipmath.caption.language_models import LanguageModel
from clipmath.encoders.base import Encoder
from clipmath.errors import CaptionError
from clipmath.options import setting

KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ZeroCapConfig:
    """Decoding options; names, meanings and defaults follow ZeroCap's ``run.py`` / ``CLIPTextGenerator``.

    ``reset_context_delta`` defaults to True: ZeroCap's ``run.py`` declares it as an opt-in flag, but its decoder
    only runs with it set (every command in its README passes it) and ``CLIPTextGenerator`` defaults to True.
    False keeps the shifted cache from one token to the next instead of recomputing a clean one (PPLM-style).
    """

    cond_text: str = setting("Image of a", 'Prompt the caption continues ("Image of text that says" for OCR).')
    target_seq_length: int = setting(15, "Maximum caption length in LM tokens.", flag="--max-length")
    beam_size: int = setting(5, "Beams.")
    reset_context_delta: bool = setting(True, "Recompute a clean context before every token (ZeroCap default: on).")
    num_iterations: int = setting(5, "Context optimisation steps per token; 0 = plain LM decoding.")
    clip_loss_temperature: float = setting(0.01, "Temperature of the image–text similarity over candidates.")
    clip_scale: float = setting(1.0, "Weight of the image–text similarity loss.")
    ce_scale: float = setting(0.2, "Weight of the fluency term (KL to the unmodified LM).")
    stepsize: float = setting(0.3, "Step size of the context optimisation.")
    grad_norm_factor: float = setting(0.9, "Gradient norm exponent (gradients divided by their norm ** this).")
    fusion_factor: float = setting(
        0.99, "Weight of the shifted distribution (p = shifted ** f · unshifted ** (1 − f))."
    )
    repetition_penalty: float = setting(1.0, "Penalty on the last 4 tokens.")
    end_token: str = setting(".", "Text of the token that ends a caption.")
    end_factor: float = setting(1.01, "End-token boost from the second token on.")
    forbidden_factor: float = setting(20.0, "Numeral-token logits scaled down by this.")
    candidates: int = setting(512, "Top LM tokens scored by the encoder per beam and step (ZeroCap: 512).")
    seed: int = setting(0, "Random seed (decoding is deterministic under it).")
    half_precision_text: bool = setting(True, "Text encoder in float16 on CUDA (no effect on the CPU).")
    lm_threads: int = setting(1, "CPU threads for the LM's small per-token passes (0: torch's setting).")

    def __post_init__(self) -> None:
        positive = {
            "target_seq_length": self.target_seq_length,
            "beam_size": self.beam_size,
            "candidates": self.candidates,
            "clip_loss_temperature": self.clip_loss_temperature,
            "end_factor": self.end_factor,
            "forbidden_factor": self.forbidden_factor,
            "repetition_penalty": self.repetition_penalty,
        }
        for name, value in positive.items():
            if not value > 0:
                raise CaptionError(f"{name} must be positive (got {value})")
        if self.num_iterations < 0:
            raise CaptionError(f"num_iterations must be >= 0 (got {self.num_iterations})")
        if self.lm_threads < 0:
            raise CaptionError(f"lm_threads must be >= 0 (got {self.lm_threads})")
        if not 0.0 <= self.fusion_factor <= 1.0:
            raise CaptionError(f"fusion_factor must be in [0, 1] (got {self.fusion_factor})")

    @property
    def guided(self) -> bool:
        return self.num_iterations > 0


# The option sets ZeroCap's README runs: captioning, visual arithmetic, real-world knowledge, OCR.
PRESETS: dict[str, ZeroCapConfig] = {
    "caption": ZeroCapConfig(),
    "arithmetic": ZeroCapConfig(end_factor=1.06, fusion_factor=0.95, grad_norm_factor=0.95),
    "real-world": ZeroCapConfig(cond_text="Image of", end_factor=1.04),
    "ocr": ZeroCapConfig(cond_text="Image of text that says", end_factor=1.04),
}

_START_END_DIVISOR = 1.6  # ZeroCap discourages ending at the very first token
_REPETITION_WINDOW = 4


class ZeroCapDecoder(GuidedDecoder):
    """Caption target embeddings with one LM and one encoder; keeps per-vocabulary tables between calls."""

    options_class = ZeroCapConfig
    config: ZeroCapConfig

    # ---- public ---------------------------------------------------------------------------------------------
    def caption(
        self,
        target_embedding: np.ndarray | torch.Tensor,
        config: ZeroCapConfig | None = None,
        progress: Progress = False,
    ) -> list[Caption]:
        """Captions (one per beam) for ``target_embedding`` (``(D,)``), best CLIP score first.

        ``progress``: ``True`` for a bar per token, or a callback ``(tokens_done, max_tokens)``.
        """
        config = config or self.config
        started = time.perf_counter()
        target = target_tensor(target_embedding, self.encoder, self.device)
        torch.manual_seed(config.seed)
        self._texts.half = config.half_precision_text
        prefix = self.prompt_ids(config.cond_text)
        with (
            TokenProgress(progress, config.target_seq_length, "zerocap") as steps,
            self.lm_threads(config.lm_threads),
        ):
            gen_tokens, lengths, scores = self._beam_search(prefix, target, config, steps)
        captions = []
        for row, length, score in zip(gen_tokens.tolist(), lengths.tolist(), scores.tolist()):
            ids = tuple(row[: int(length)])
            continuation = self.lm.decode(list(ids))
            captions.append((continuation, ids, score / length))
        texts = [c[0].strip() or c[0] for c in captions]
        sims = self._texts(texts) @ target.cpu().numpy()
        seconds = time.perf_counter() - started
        out = [
            Caption(
                text=text,
                prompt=config.cond_text,
                clip_score=float(sim),
                lm_score=float(lm_score),
                continuation=continuation,
                tokens=ids,
                seconds=seconds,
            )
            for (continuation, ids, lm_score), text, sim in zip(captions, texts, sims)
        ]
        return sorted(out, key=lambda c: (-c.clip_score, -c.lm_score))

    # ---- beam search ----------------------------------------------------------------------------------------
    def _beam_search(
        self, prefix: list[int], target: torch.Tensor, config: ZeroCapConfig, steps: TokenProgress
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run beam search; returns generated tokens ``(B, T)``, lengths ``(B,)`` and summed log-probs ``(B,)``."""
        beam = config.beam_size
        stop_ids = torch.tensor(self.vocab.stop_ids(config.end_token), device=self.device)
        pad_id = int(stop_ids[0])
        context = torch.tensor([prefix], device=self.device)
        gen = torch.zeros((1, 0), dtype=torch.long, device=self.device)
        scores = torch.zeros(1, device=self.device)
        lengths = torch.zeros(1, device=self.device)
        stopped = torch.zeros(1, dtype=torch.bool, device=self.device)
        carried: KV | None = None
        for step in range(config.target_seq_length):
            log_probs, carried = self._next_log_probs(step, context, target, config, carried)
            vocab = log_probs.shape[1]
            log_probs[stopped] = -float("inf")
            log_probs[stopped, pad_id] = 0.0
            lengths = lengths + (~stopped).float()
            mean = (scores[:, None] + log_probs) / lengths[:, None]
            best, flat = mean.view(-1).topk(min(beam, mean.numel()))
            source, next_tokens = flat // vocab, flat % vocab
            lengths, stopped = lengths[source], stopped[source]
            scores = best * lengths
            gen = torch.cat([gen[source], next_tokens[:, None]], dim=1)
            context = torch.cat([context[source], next_tokens[:, None]], dim=1)
            if carried is not None:
                carried = [(k[source], v[source]) for k, v in carried]
            stopped = stopped | torch.isin(next_tokens, stop_ids)
            steps.step()
            if bool(stopped.all()):
                break
        return gen, lengths, scores

    def _next_log_probs(
        self, step: int, context: torch.Tensor, target: torch.Tensor, config: ZeroCapConfig, carried: KV | None
    ) -> tuple[torch.Tensor, KV | None]:
        """Log of ZeroCap's fused next-token distribution for each beam, and the cache to carry on (if any)."""
        model = self.lm.model
        last = context[:, -1:]
        past: KV | None = None
        with torch.no_grad():
            if context.shape[1] > 1:
                past = kv_tensors(returned_cache(model(context[:, :-1], use_cache=True)))
            logits_before = model(last, **cache_arg(model, past), use_cache=True).logits
        probs_before = torch.softmax(logits_before[:, -1, :].float(), dim=-1)
        if carried is not None and not config.reset_context_delta:
            past = carried
        if past is not None and config.guided:
            past = self._shift_context(past, last, context, probs_before, target, config)
        with torch.no_grad():
            out = model(last, **cache_arg(model, past), use_cache=True)
        logits = self._adjust_special_tokens(out.logits[:, -1, :].float(), context, step, config)
        probs = torch.softmax(logits, dim=-1)
        fused = probs.pow(config.fusion_factor) * probs_before.pow(1.0 - config.fusion_factor)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        carry = None if config.reset_context_delta else kv_tensors(returned_cache(out))
        return fused.log(), carry

    # ---- the context shift ----------------------------------------------------------------------------------
    def _shift_context(
        self,
        past: KV,
        last: torch.Tensor,
        context: torch.Tensor,
        probs_before: torch.Tensor,
        target: torch.Tensor,
        config: ZeroCapConfig,
    ) -> KV:
        """Optimise an additive delta on every cached key and value; return the shifted cache (detached)."""
        model = self.lm.model
        past = [(k.detach(), v.detach()) for k, v in past]
        deltas = [torch.zeros_like(t) for pair in past for t in pair]
        prefixes = [self.lm.decode(row) for row in context.tolist()]
        log_before = probs_before.clamp_min(1e-30).log()
        for _ in range(config.num_iterations):
            for d in deltas:
                d.requires_grad_(True)
            shifted = [(k + deltas[2 * i], v + deltas[2 * i + 1]) for i, (k, v) in enumerate(past)]
            logits = model(last, **cache_arg(model, shifted), use_cache=True).logits
            log_probs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
            probs = log_probs.exp()
            clip_loss = self._clip_loss(log_probs, prefixes, target, config)
            fluency = config.ce_scale * (probs * (log_probs - log_before)).sum(dim=-1)
            loss = config.clip_scale * clip_loss.sum() + fluency.sum()
            grads = torch.autograd.grad(loss, deltas)
            with torch.no_grad():
                deltas = [
                    d.detach() - config.stepsize * _per_beam_normalised(g, config.grad_norm_factor)
                    for d, g in zip(deltas, grads)
                ]
        return [(k + deltas[2 * i], v + deltas[2 * i + 1]) for i, (k, v) in enumerate(past)]

    def _clip_loss(
        self, log_probs: torch.Tensor, prefixes: Sequence[str], target: torch.Tensor, config: ZeroCapConfig
    ) -> torch.Tensor:
        """Per beam: cross-entropy between softmax(cos(text, target)/T) over the top candidates and the LM."""
        top = min(config.candidates, log_probs.shape[1])
        top_ids = log_probs.detach().topk(top, dim=-1).indices
        token_texts = self.vocab.texts
        # every beam's candidates in one call: misses are encoded together, shortest first
        texts = [prefix + token_texts[i] for prefix, row in zip(prefixes, top_ids.tolist()) for i in row]
        feats = torch.from_numpy(self._texts(texts)).to(target.device).view(len(prefixes), top, -1)
        wanted = torch.softmax((feats @ target) / config.clip_loss_temperature, dim=-1)
        return -(wanted * log_probs.gather(1, top_ids)).sum(dim=-1)

    # ---- logit rules ----------------------------------------------------------------------------------------
    def _adjust_special_tokens(
        self, logits: torch.Tensor, context: torch.Tensor, step: int, config: ZeroCapConfig
    ) -> torch.Tensor:
        """ZeroCap's logit rules: repetition penalty, end-token schedule, discouraged numerals; no special tokens.

        A factor f > 1 "raises" a logit by multiplying it when positive and dividing it when negative.
        """
        logits = logits.clone()
        if config.repetition_penalty != 1.0:
            for b, row in enumerate(context[:, -_REPETITION_WINDOW:].tolist()):
                ids = torch.tensor(sorted(set(row)), device=logits.device)
                logits[b, ids] = _scale(logits[b, ids], 1.0 / config.repetition_penalty)
        end_ids = self.vocab.end_ids(config.end_token)
        if step >= 1:
            logits[:, end_ids] = _scale(logits[:, end_ids], config.end_factor)
        if step == 0:
            logits[:, end_ids] = _scale(logits[:, end_ids], 1.0 / _START_END_DIVISOR)
        numerals = self.vocab.numerals(self.device)
        if numerals.numel():
            logits[:, numerals] = _scale(logits[:, numerals], 1.0 / config.forbidden_factor)
        banned = self.vocab.banned(self.device)
        if banned.numel():
            logits[:, banned] = -float("inf")
        return logits


def caption(
    target_embedding: np.ndarray | torch.Tensor,
    lm: LanguageModel,
    encoder: Encoder,
    config: ZeroCapConfig | None = None,
    progress: Progress = False,
    **overrides: object,
) -> list[Caption]:
    """ZeroCap captions of one target embedding, best CLIP score first.

    ``config`` defaults to ZeroCap's run.py options; keyword ``overrides`` replace single fields
    (``caption(v, lm, enc, beam_size=2, cond_text="Image of text that says")``).
    """
    config = config or ZeroCapConfig()
    if overrides:
        unknown = set(overrides) - set(ZeroCapConfig.__dataclass_fields__)
        if unknown:
            raise CaptionError(f"unknown caption option(s): {', '.join(sorted(unknown))}")
        config = replace(config, **overrides)
    return ZeroCapDecoder(lm, encoder, config).caption(target_embedding, progress=progress)


# ---- cache plumbing (transformers 5.x DynamicCache, 4.x tuples) -----------------------------------------------
def kv_tensors(cache: object) -> KV:
    """Per-layer ``(keys, values)`` tensors of a past-key-values object (a ``Cache`` or legacy tuples)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "to_legacy_cache"):
        cache = cache.to_legacy_cache()
    return [(layer[0], layer[1]) for layer in cache]


def cache_arg(model: torch.nn.Module, kv: KV | None) -> dict[str, object]:
    """The keyword that hands ``kv`` to ``model.forward`` as a fresh cache: ``cache`` in the transformers releases
    that renamed it (passing the old name there only earns a deprecation warning per call), else
    ``past_key_values``."""
    return {_cache_keyword(type(model)): make_cache(kv, model.config)}


def returned_cache(output: object) -> object:
    """The cache a forward pass returned, under either of its names."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values  # type: ignore[attr-defined]


@functools.cache
def _cache_keyword(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def make_cache(kv: KV | None, config: object) -> object | None:
    """A fresh ``DynamicCache`` holding ``kv`` (differentiable: the tensors are used as given, not copied)."""
    if kv is None:
        return None
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=kv, config=config)
    except TypeError:  # transformers 4.x
        return DynamicCache.from_legacy_cache(tuple(kv))


def _per_beam_normalised(grad: torch.Tensor, power: float) -> torch.Tensor:
    """``grad / ‖grad_b‖ ** power`` with one norm per beam (first axis)."""
    norms = grad.flatten(1).norm(dim=1) + 1e-15
    return grad / norms.pow(power).view(-1, *([1] * (grad.dim() - 1)))


def _scale(logits: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply positive logits by ``factor`` and divide negative ones by it (ZeroCap's sign-aware scaling)."""
    return torch.where(logits > 0, logits * factor, logits / factor)
