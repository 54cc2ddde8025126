"""SEARLE: composed retrieval by textual inversion (methods ``searle`` and ``oti``).

The reference image becomes a pseudo-word ``$`` in the text encoder's token-embedding space, and the query is the
text feature of ``"a photo of $ that {caption}"``. Two ways to get the pseudo-word:

* ``searle``: the phi network, an MLP from the image feature to the token embedding (trained by
  ``clipmath train phi``, distilled from OTI tokens);
* ``oti``: optimisation-based textual inversion, per image: gradient steps on the token so that
  ``"a photo of $"`` encodes close to the image feature, regularised so that ``$`` stands in for concept words
  inside phrases (``clipmath train oti`` inverts a folder ahead of time; other images are inverted on the fly).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from clipmath.compose.base import (
    Composer,
    CompositionQuery,
    QueryEmbeddings,
    embed_queries,
    missing_input,
    normalise,
)
from clipmath.compose.checkpoint import Checkpoint, load_checkpoint
from clipmath.compose.concepts import (  # re-exported: the concept vocabulary used to live here
    DEFAULT_CONCEPTS,
    PHRASE_TEMPLATES,
    ConceptBank,
    ConceptVocabulary,
    pseudo_phrase,
)
from clipmath.encoders.base import PLACEHOLDER, Encoder
from clipmath.errors import ComposeError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CONCEPTS",
    "DEFAULT_PROMPT",
    "OTI_KIND",
    "PHI_KIND",
    "PHRASE_TEMPLATES",
    "ConceptBank",
    "ConceptVocabulary",
    "InversionSettings",
    "OtiComposer",
    "Phi",
    "SearleComposer",
    "fill_prompt",
    "invert",
    "load_oti",
    "load_searle",
    "pseudo_phrase",
]

PHI_KIND = "phi"
OTI_KIND = "oti"
DEFAULT_PROMPT = "a photo of $ that {caption}"
#: cosine above which a query image is taken to be an image already inverted in an OTI checkpoint
SAME_IMAGE_COSINE = 0.9995


# ---- the phi network -----------------------------------------------------------------------------------------
class Phi(nn.Module):
    """Image feature ``(B, D)`` → pseudo-token embedding ``(B, E)``: a 3-layer MLP with GELU and dropout."""

    def __init__(self, dim: int, token_dim: int, hidden_dim: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        self.dims = {"dim": dim, "token_dim": token_dim, "hidden_dim": hidden_dim, "dropout": dropout}
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, token_dim),
        )

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.layers(image_features)


# ---- prompts ---------------------------------------------------------------------------------------------------
def fill_prompt(prompt: str, caption: str) -> str:
    """``prompt`` with ``{caption}`` filled; the result holds the placeholder ``$`` exactly once."""
    if PLACEHOLDER in caption:
        raise ComposeError(f"the caption may not contain the placeholder {PLACEHOLDER!r}: {caption!r}")
    text = prompt.replace("{caption}", caption.strip())
    if text.count(PLACEHOLDER) != 1:
        raise ComposeError(f"the prompt needs exactly one {PLACEHOLDER!r} for the image: {prompt!r}")
    return text


def encode_with_tokens(
    encoder: Encoder, prompts: Sequence[str], tokens: torch.Tensor, batch_size: int = 64
) -> np.ndarray:
    """Normalised text features ``(N, D)`` of ``prompts``, row ``i``'s ``$`` carrying ``tokens[i]``."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = tokens[start : start + batch_size].to(encoder.device)
            feats = encoder.text_features_with_pseudo_tokens(list(prompts[start : start + batch_size]), batch)
            chunks.append(F.normalize(feats.float(), dim=-1).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)


def _captions(queries: Sequence[CompositionQuery], method: str) -> list[str]:
    for i, query in enumerate(queries):
        if query.text is None or not query.text.strip():
            raise missing_input(method, "text", i)
    return [str(q.text) for q in queries]


# ---- OTI: optimisation-based textual inversion -------------------------------------------------------------
@dataclass
class InversionSettings:
    """Hyper-parameters of OTI (defaults: the SEARLE README's)."""

    steps: int = 350
    lr: float = 2e-2
    weight_decay: float = 0.01
    ema_decay: float = 0.99
    lambda_cos: float = 1.0
    lambda_reg: float = 0.5  # SEARLE's lambda_gpt: weight of the concept-phrase regulariser
    top_k: int = 15  # concepts associated with each image
    template: str = "a photo of $"  # the prompt whose feature must match the image feature
    batch_size: int = 32

    @classmethod
    def from_dict(cls, data: dict) -> InversionSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@contextlib.contextmanager
def frozen(encoder: Encoder) -> Iterator[None]:
    """Within the block no encoder parameter collects gradients (inversion trains only the pseudo-tokens)."""
    modules = encoder.trainable_modules().values()
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def initial_tokens(encoder: Encoder, count: int, generator: torch.Generator) -> torch.Tensor:
    """Random starting pseudo-tokens with the spread of the real token embeddings."""
    table = encoder.token_embedding_table().weight.detach()
    noise = torch.randn(count, table.shape[1], generator=generator)
    return (noise * table.float().std(dim=0).cpu() + table.float().mean(dim=0).cpu()).to(table.device)


def invert(
    encoder: Encoder,
    image_features: torch.Tensor,
    settings: InversionSettings,
    bank: ConceptBank | None = None,
    generator: torch.Generator | None = None,
    amp: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """OTI for a batch of normalised image features ``(B, D)``: the EMA pseudo-tokens ``(B, E)`` and the loss
    at every step. The loss is ``λ_cos·(1 − cos(text("a photo of $"), image)) + λ_reg·phrase regulariser``."""
    generator = generator or torch.Generator().manual_seed(0)
    targets = F.normalize(image_features.float(), dim=-1).to(encoder.device)
    tokens = nn.Parameter(initial_tokens(encoder, targets.shape[0], generator))
    average = tokens.detach().clone()
    optimiser = torch.optim.AdamW([tokens], lr=settings.lr, weight_decay=settings.weight_decay)
    prompts = [settings.template] * targets.shape[0]
    nearest = bank.nearest_concepts(targets, settings.top_k) if bank is not None and settings.lambda_reg else None
    use_amp = amp and encoder.device.type == "cuda"
    losses = []
    with frozen(encoder):
        for _ in tqdm(range(settings.steps), desc="inverting", disable=not progress, leave=False):
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(encoder.device.type, enabled=use_amp):
                feats = encoder.text_features_with_pseudo_tokens(prompts, tokens)
                loss = settings.lambda_cos * (1 - F.cosine_similarity(feats.float(), targets, dim=-1)).mean()
                if nearest is not None:
                    rows = bank.sample_phrases(nearest, generator)  # type: ignore[union-attr]
                    loss = loss + settings.lambda_reg * bank.regularisation(encoder, tokens, rows)  # type: ignore[union-attr]
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                average.mul_(settings.ema_decay).add_(tokens.detach(), alpha=1 - settings.ema_decay)
            losses.append(float(loss.detach()))
    return average.detach(), losses


# ---- composers ---------------------------------------------------------------------------------------------
class SearleComposer(Composer):
    def __init__(self, phi: Phi, prompt: str = DEFAULT_PROMPT) -> None:
        self.phi = phi
        self.prompt = prompt

    def pseudo_tokens(self, image_features: np.ndarray) -> torch.Tensor:
        parameter = next(self.phi.parameters())
        was_training = self.phi.training
        self.phi.eval()
        try:
            with torch.no_grad():
                inputs = torch.from_numpy(np.asarray(image_features, dtype=np.float32)).to(parameter.device)
                return self.phi(inputs.to(parameter.dtype)).float()
        finally:
            self.phi.train(was_training)

    def compose(self, encoder: Encoder, queries: Sequence[CompositionQuery], batch_size: int = 64) -> np.ndarray:
        if not queries:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        prompts = [fill_prompt(self.prompt, c) for c in _captions(queries, self.name)]
        embeddings = embed_queries(encoder, queries, ("reference",), self.name, batch_size)
        return normalise(encode_with_tokens(encoder, prompts, self.pseudo_tokens(embeddings.reference), batch_size))

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:  # pragma: no cover - compose() is overridden
        raise NotImplementedError


class OtiComposer(Composer):
    """Looks a reference up among the images inverted ahead of time; inverts the others on the fly (slow)."""

    def __init__(
        self,
        tokens: torch.Tensor,
        image_features: torch.Tensor,
        settings: InversionSettings,
        vocabulary: ConceptVocabulary | None = None,
        prompt: str = DEFAULT_PROMPT,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.tokens = tokens.float().cpu()
        self.image_features = F.normalize(image_features.float().cpu(), dim=-1)
        self.settings = settings
        self.vocabulary = vocabulary
        self.prompt = prompt
        self.seed = seed
        self.progress = progress
        self._bank: tuple[str, ConceptBank] | None = None
        self._lock = threading.Lock()  # the server shares one composer between requests

    def lookup(self, image_features: np.ndarray) -> list[int | None]:
        """Row of the stored token for each image (``None`` where the image was not inverted ahead of time)."""
        if self.tokens.shape[0] == 0:
            return [None] * len(image_features)
        sims = torch.from_numpy(np.asarray(image_features, dtype=np.float32)) @ self.image_features.T
        best = sims.max(dim=1)
        return [int(i) if v >= SAME_IMAGE_COSINE else None for v, i in zip(best.values.tolist(), best.indices.tolist())]

    def bank(self, encoder: Encoder) -> ConceptBank | None:
        if self.vocabulary is None or not self.settings.lambda_reg:
            return None
        if self._bank is None or self._bank[0] != encoder.info.model_id:
            self._bank = (encoder.info.model_id, ConceptBank.build(encoder, self.vocabulary))
        return self._bank[1]

    def pseudo_tokens(self, encoder: Encoder, image_features: np.ndarray) -> torch.Tensor:
        """One token per image: the stored one, or a fresh inversion (then remembered)."""
        with self._lock:
            return self._pseudo_tokens(encoder, image_features)

    def _pseudo_tokens(self, encoder: Encoder, image_features: np.ndarray) -> torch.Tensor:
        rows = self.lookup(image_features)
        missing = [i for i, r in enumerate(rows) if r is None]
        out = torch.zeros(len(rows), encoder.token_embedding_table().embedding_dim)
        for i, row in enumerate(rows):
            if row is not None:
                out[i] = self.tokens[row]
        if missing:
            log.info("OTI: inverting %d image(s) not in the checkpoint (%d steps)", len(missing), self.settings.steps)
            generator = torch.Generator().manual_seed(self.seed)
            feats = torch.from_numpy(np.asarray(image_features, dtype=np.float32)[missing])
            size = max(1, self.settings.batch_size)
            for start in range(0, len(missing), size):
                tokens, _ = invert(
                    encoder,
                    feats[start : start + size],
                    self.settings,
                    self.bank(encoder),
                    generator,
                    progress=self.progress,
                )
                out[missing[start : start + size]] = tokens.float().cpu()
            # remember them: the same image asked again is not inverted twice
            self.tokens = torch.cat([self.tokens.reshape(-1, out.shape[1]), out[missing]])
            known = self.image_features.reshape(-1, feats.shape[1])
            self.image_features = torch.cat([known, F.normalize(feats, dim=-1)])
        return out

    def compose(self, encoder: Encoder, queries: Sequence[CompositionQuery], batch_size: int = 64) -> np.ndarray:
        if not queries:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        prompts = [fill_prompt(self.prompt, c) for c in _captions(queries, self.name)]
        embeddings = embed_queries(encoder, queries, ("reference",), self.name, batch_size)
        tokens = self.pseudo_tokens(encoder, embeddings.reference)
        return normalise(encode_with_tokens(encoder, prompts, tokens, batch_size))

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:  # pragma: no cover - compose() is overridden
        raise NotImplementedError


# ---- checkpoints ---------------------------------------------------------------------------------------------
def phi_from_checkpoint(checkpoint: Checkpoint) -> Phi:
    config = checkpoint.config
    phi = Phi(checkpoint.dim, _phi_token_dim(checkpoint), config.get("hidden_dim"), float(config.get("dropout", 0.5)))
    phi.load_state_dict(checkpoint.tensors)
    return phi.eval()


def load_searle(encoder: Encoder | None, checkpoint: str | None) -> SearleComposer:
    """Registry factory: the phi-based SEARLE composer from a ``clipmath train phi`` checkpoint."""
    loaded = load_checkpoint(checkpoint or "", PHI_KIND, encoder)
    _check_token_width(loaded, encoder, _phi_token_dim(loaded))
    return SearleComposer(phi_from_checkpoint(loaded), loaded.config.get("prompt", DEFAULT_PROMPT))


def oti_from_checkpoint(checkpoint: Checkpoint, progress: bool = False) -> OtiComposer:
    tokens = checkpoint.tensors.get("tokens", torch.zeros(0, 0))
    features = checkpoint.tensors.get("image_features", torch.zeros(0, checkpoint.dim))
    vocabulary = checkpoint.extra.get("concepts")
    return OtiComposer(
        tokens,
        features,
        InversionSettings.from_dict(checkpoint.config),
        ConceptVocabulary.from_dict(vocabulary) if vocabulary else None,
        checkpoint.config.get("prompt", DEFAULT_PROMPT),
        int(checkpoint.config.get("seed", 0)),
        progress,
    )


def load_oti(encoder: Encoder | None, checkpoint: str | None) -> OtiComposer:
    """Registry factory: the OTI composer from a ``clipmath train oti`` checkpoint (tokens + OTI settings)."""
    loaded = load_checkpoint(checkpoint or "", OTI_KIND, encoder)
    if "tokens" in loaded.tensors and loaded.tensors["tokens"].numel():
        _check_token_width(loaded, encoder, int(loaded.tensors["tokens"].shape[1]))
    return oti_from_checkpoint(loaded)


def _phi_token_dim(checkpoint: Checkpoint) -> int:
    last = max((k for k in checkpoint.tensors if k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    return int(checkpoint.tensors[last].shape[0])


def _check_token_width(checkpoint: Checkpoint, encoder: Encoder | None, width: int) -> None:
    if encoder is not None and encoder.token_embedding_table().embedding_dim != width:
        raise ComposeError(
            f"checkpoint {checkpoint.path} makes {width}-d pseudo-tokens; the model's tokens are "
            f"{encoder.token_embedding_table().embedding_dim}-d"
        )
