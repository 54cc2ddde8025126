"""Composed retrieval by caption -> rewrite -> text retrieval: CIReVL, LDRE, SEIZE and the image-fusion variant.

Every method captions the reference image (a caption decoder steered by its embedding, so a stored vector works as
well as a file), rewrites each caption with the modification text (a :data:`~clipmath.caption.rewriters.REWRITERS`
entry), and searches with the text embedding of the rewrites:

* ``cirevl`` — one caption, one rewrite, ``q = t(rewrite)`` (Karthik et al., ICLR 2024);
* ``ldre`` — N captions, N rewrites, ``q = Σ w_i t(rewrite_i)`` with ``w = softmax(cos(t(rewrite_i), mean)/τ)``: the
  rewrites that agree with the others weigh more (Yang et al., SIGIR 2024; the weighting is clipmath's reading);
* ``seize`` — the LDRE query, and :func:`seize_scores` for the SEIZE re-scoring ``s_after + 2.1·min(d, 0) +
  0.13·max(d, 0)``, ``d = s_after − s_before`` (Yang et al., ACM MM 2024), see :meth:`SeizeRetrieval.gallery_scores`;
* ``pdv`` — ``q = t(rewrite) + w·(image − t(caption))``: the reference image added back by vector arithmetic,
  keeping what the caption missed (the pseudo-difference-vector idea).

Captions and rewrites are cached (:mod:`clipmath.caption.rewrite_cache`); :meth:`RewriteRetrieval.explain` says which
captions and rewrites made each query.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from clipmath.caption.rewrite_cache import RewriteCache, cache_key, content_hash, default_cache
from clipmath.compose.base import Composer, CompositionQuery, QueryEmbeddings, embed_queries, missing_input
from clipmath.errors import ComposeError
from clipmath.options import check_fields, setting
from clipmath.vectors import l2_normalise

#: How the N captions of one image differ: each starts the decoder from another prompt (deterministic, no sampling).
CAPTION_STARTS = (
    "Image of a", "A photo of a", "A picture of a", "A close-up photo of a", "An image showing a", "There is a",
    "This is a photo of a", "A snapshot of a", "A view of a", "A scene with a", "In this picture, a",
    "The photo shows a", "A shot of a", "Here we see a", "A depiction of a",
)  # fmt: skip

#: ``(image vector, how many) -> captions``: what a pipeline asks of its captioner.
CaptionFn = Callable[[np.ndarray, int], list[str]]


@dataclass
class RewriteSettings:
    """The knobs of the rewrite pipelines (defaults: CIReVL's one caption, one rewrite)."""

    captions: int = setting(1, "Captions of the reference image, each rewritten (LDRE and SEIZE use 15).",
                            minimum=1, maximum=len(CAPTION_STARTS))  # fmt: skip
    decoder: str = setting("magic", "Caption decoder of the reference image (a DECODERS entry).")
    language_model: str | None = setting(None, "LM the caption decoder steers (default: $CLIPMATH_LM, else auto).")
    rewriter: str | None = setting(
        None, "Rewriter: template, lm:NAME or openai:URL[#MODEL] (default: $CLIPMATH_REWRITER, else template)."
    )
    prompt: str = setting("cirevl", "Few-shot prompt of the rewriter (caption/data/rewrite_prompts.json).")
    temperature: float = setting(0.05, "Softmax temperature of the ensemble weights (LDRE, SEIZE).", minimum=1e-4)
    image_weight: float = setting(0.5, "Weight of (image − caption) added to the rewrite (pdv).",
                                  minimum=-10, maximum=10)  # fmt: skip
    seize_negative: float = setting(2.1, "SEIZE: weight of min(d, 0), d = s_after − s_before.", minimum=0)
    seize_positive: float = setting(0.13, "SEIZE: weight of max(d, 0).", minimum=0)
    cache: bool = setting(True, "Keep captions and rewrites in the cache folder (re-runs cost only retrieval).")


@dataclass
class EnsembleSettings(RewriteSettings):
    captions: int = 15


@dataclass
class QueryPlan:
    """What made one query: the captions, their rewrites, the weights, and their embeddings."""

    captions: list[str]
    rewrites: list[str]
    image: np.ndarray  # (D,)
    before: np.ndarray  # (N, D) text embeddings of the captions
    after: np.ndarray  # (N, D) text embeddings of the rewrites
    weights: np.ndarray  # (N,)

    def explain(self) -> dict[str, Any]:
        return {"captions": self.captions, "rewrites": self.rewrites,
                "weights": [round(float(w), 4) for w in self.weights]}  # fmt: skip


def softmax_weights(after: np.ndarray, temperature: float) -> np.ndarray:
    """LDRE-style ensemble weights: softmax over each rewrite's cosine with the rewrites' mean, over ``temperature``."""
    if len(after) == 1:
        return np.ones(1, dtype=np.float32)
    centre = l2_normalise(after.mean(axis=0, keepdims=True))[0]
    logits = after @ centre / temperature
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).astype(np.float32)


def seize_scores(
    s_after: np.ndarray, s_before: np.ndarray, negative: float = 2.1, positive: float = 0.13
) -> np.ndarray:
    """SEIZE's score: ``s_after + negative·min(d, 0) + positive·max(d, 0)`` with ``d = s_after − s_before``."""
    d = s_after - s_before
    return s_after + negative * np.minimum(d, 0.0) + positive * np.maximum(d, 0.0)


class RewriteRetrieval(Composer):
    """CIReVL: caption the reference, rewrite the caption with the text, search with the rewrite's text embedding.

    ``captioner`` and ``rewriter`` replace the ones the settings name (tests, or a service holding its own models).
    """

    settings_class: type[RewriteSettings] = RewriteSettings

    def __init__(self, settings: RewriteSettings | None = None, captioner: CaptionFn | None = None,
                 rewriter: Any = None, cache: RewriteCache | None = None) -> None:  # fmt: skip
        self.settings = settings if settings is not None else self.settings_class()
        check_fields(self.settings)
        self._captioner, self._rewriter = captioner, rewriter
        self._cache = cache
        self._captioners: dict[int, tuple[CaptionFn, str]] = {}
        self._lock = threading.RLock()
        self.caption_calls = self.rewrite_calls = 0

    # ---- the pipeline ----------------------------------------------------------------------------------------
    def compose(self, encoder: Any, queries: Sequence[CompositionQuery], batch_size: int = 64) -> np.ndarray:
        if not queries:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        plans = self.plan(encoder, queries, batch_size)
        return l2_normalise(np.stack([self.query_vector(p) for p in plans]).astype(np.float32))

    def query_vector(self, plan: QueryPlan) -> np.ndarray:
        """The search vector of one planned query (CIReVL: the one rewrite; subclasses weigh or fuse)."""
        return plan.weights @ plan.after

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:
        raise ComposeError(f"method '{self.name}' composes from captions and rewrites, not from embeddings alone")

    def plan(self, encoder: Any, queries: Sequence[CompositionQuery], batch_size: int = 64) -> list[QueryPlan]:
        """Caption, rewrite and embed every query (cached captions and rewrites are not made again)."""
        missing = [i for i, q in enumerate(queries) if not (q.text or "").strip()]
        if missing:  # checked first: the instruction is not encoded, only rewritten
            raise missing_input(self.name, "text", missing[0])
        gathered = embed_queries(encoder, queries, ("reference",), self.name, batch_size)
        assert gathered.reference is not None
        caption_fn, caption_label = self.captioner(encoder)
        plans = []
        for query, image in zip(queries, gathered.reference):
            captions = self._captions(encoder, caption_fn, caption_label, image)
            rewrites = [self._rewrite(caption, str(query.text)) for caption in captions]
            before = encoder.encode_texts(captions, batch_size=batch_size)
            after = encoder.encode_texts(rewrites, batch_size=batch_size)
            weights = softmax_weights(after, self.settings.temperature)
            plans.append(QueryPlan(captions, rewrites, image, before, after, weights))
        return plans

    def explain(self, encoder: Any, queries: Sequence[CompositionQuery]) -> list[dict[str, Any]]:
        """Per query: the captions and rewrites that made it, their weights, and who wrote them."""
        caption_label = self.captioner(encoder)[1]
        info = {"captioner": caption_label, "rewriter": self.rewriter.label}
        return [{**plan.explain(), **info} for plan in self.plan(encoder, queries)]

    # ---- parts -----------------------------------------------------------------------------------------------
    @property
    def cache(self) -> RewriteCache:
        if self._cache is None:
            self._cache = default_cache() if self.settings.cache else RewriteCache()
        return self._cache

    @property
    def rewriter(self) -> Any:
        with self._lock:
            if self._rewriter is None:
                from clipmath.caption.rewriters import load_rewriter

                name = self.settings.rewriter or os.environ.get("CLIPMATH_REWRITER") or "template"
                self._rewriter = load_rewriter(name, self.settings.prompt)
            return self._rewriter

    def captioner(self, encoder: Any) -> tuple[CaptionFn, str]:
        """``(captions of a vector, label)`` for ``encoder``'s space: the given one, or the settings' decoder."""
        if self._captioner is not None:
            return self._captioner, getattr(self._captioner, "label", "given captioner")
        with self._lock:
            if id(encoder) not in self._captioners:
                self._captioners[id(encoder)] = decoder_captioner(encoder, self.settings)
            return self._captioners[id(encoder)]

    def _captions(self, encoder: Any, caption_fn: CaptionFn, label: str, image: np.ndarray) -> list[str]:
        count = self.settings.captions
        space = getattr(getattr(encoder, "info", None), "model_id", type(encoder).__name__)
        key = cache_key("captions", space, content_hash(image), label, count)
        found = self.cache.get(key)
        if found is None:
            self.caption_calls += 1
            found = [str(c) for c in caption_fn(image, count)][:count]
            if not found:
                raise ComposeError(f"method '{self.name}': the captioner gave no caption")
            self.cache.put(key, found)
        return list(found)

    def _rewrite(self, caption: str, instruction: str) -> str:
        rewriter = self.rewriter
        key = cache_key("rewrite", rewriter.label, self.settings.prompt, caption, instruction)
        found = self.cache.get(key)
        if found is None:
            self.rewrite_calls += 1
            found = rewriter.rewrite(caption, instruction).strip() or caption
            self.cache.put(key, found)
        return str(found)


class EnsembleRetrieval(RewriteRetrieval):
    """LDRE: N captions, N rewrites, the softmax-weighted ensemble of the rewrites' embeddings."""

    settings_class = EnsembleSettings


class SeizeRetrieval(EnsembleRetrieval):
    """SEIZE: the LDRE ensemble as the search vector; :meth:`gallery_scores` re-scores gallery vectors exactly."""

    def gallery_scores(self, encoder: Any, queries: Sequence[CompositionQuery], gallery: np.ndarray) -> np.ndarray:
        """``(B, N)`` SEIZE scores of ``gallery`` (L2-normalised rows) for each query."""
        rows = []
        for plan in self.plan(encoder, queries):
            after = l2_normalise((plan.weights @ plan.after)[None])[0]
            before = l2_normalise((plan.weights @ plan.before)[None])[0]
            rows.append(seize_scores(gallery @ after, gallery @ before,
                                     self.settings.seize_negative, self.settings.seize_positive))  # fmt: skip
        return np.stack(rows).astype(np.float32)


class ImageFusionRetrieval(RewriteRetrieval):
    """``q = t(rewrite) + w·(image − t(caption))``: the reference image's content the caption missed, added back."""

    def query_vector(self, plan: QueryPlan) -> np.ndarray:
        after = l2_normalise((plan.weights @ plan.after)[None])[0]
        before = l2_normalise((plan.weights @ plan.before)[None])[0]
        return after + self.settings.image_weight * (plan.image - before)


def decoder_captioner(encoder: Any, settings: RewriteSettings) -> tuple[CaptionFn, str]:
    """Captions from the settings' decoder and language model, each started from another :data:`CAPTION_STARTS`."""
    from clipmath.caption.decoders import DECODERS
    from clipmath.caption.language_models import load_language_model

    spec = DECODERS.get(settings.decoder)
    lm = load_language_model(settings.language_model)
    decoder = spec.create(lm, encoder)
    base = decoder.config  # type: ignore[attr-defined]

    def caption_fn(image: np.ndarray, count: int) -> list[str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations: nothing a user can act on
            if hasattr(base, "cond_text"):
                starts = CAPTION_STARTS[:count]
                return [decoder.caption(image, replace(base, cond_text=s))[0].full_text for s in starts]
            return [c.full_text for c in decoder.caption(image)][:count]

    return caption_fn, f"{spec.shown_name()} · {lm.label()}"
