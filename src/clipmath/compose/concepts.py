"""Concept vocabularies for textual inversion: words, phrases holding them, and their ``$`` versions.

OTI and phi regularise a pseudo-word ``$`` so that it can stand in for a concept word inside real phrases
("a photo of a dog" -> "a photo of a $"). :class:`ConceptVocabulary` holds the words and phrases (read from JSON
or plain text); :class:`ConceptBank` is one vocabulary encoded by one encoder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from clipmath.encoders.base import PLACEHOLDER, Encoder
from clipmath.errors import DatasetError

DEFAULT_CONCEPTS = Path(__file__).with_name("data") / "concepts.json"
#: phrases made for concepts given without any (a plain-text vocabulary)
PHRASE_TEMPLATES = ("a photo of a {}", "a close-up picture of a {}", "there is a {} in this scene", "a {} from afar")


@dataclass
class ConceptVocabulary:
    """Concept words, each with phrases that contain it; ``$`` replaces the concept to regularise a pseudo-word."""

    phrases: dict[str, list[str]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> ConceptVocabulary:
        """Read a vocabulary: JSON ``{concept: [phrases]}`` or text, one concept per line (phrases templated).

        ``None`` gives the small default list shipped with clipmath.
        """
        path = Path(path) if path else DEFAULT_CONCEPTS
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"cannot read concept vocabulary {path}: {exc.strerror or exc}") from None
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise DatasetError(f"concept vocabulary {path} is not valid JSON: {exc}") from None
            if isinstance(data, list):
                data = {str(c): [] for c in data}
            if not isinstance(data, dict):
                raise DatasetError(f"concept vocabulary {path}: expected {{concept: [phrases]}} or a list")
            return cls.from_dict(data, source=str(path))
        concepts = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return cls.from_dict({c: [] for c in concepts}, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "vocabulary") -> ConceptVocabulary:
        phrases: dict[str, list[str]] = {}
        for concept, items in data.items():
            concept = str(concept).strip()
            if not concept or PLACEHOLDER in concept:
                raise DatasetError(f"{source}: bad concept {concept!r}")
            items = [str(p) for p in (items or [])] or [t.format(concept) for t in PHRASE_TEMPLATES]
            for phrase in items:
                if pseudo_phrase(phrase, concept) is None:
                    raise DatasetError(f"{source}: phrase {phrase!r} does not contain its concept {concept!r}")
            phrases[concept] = items
        if not phrases:
            raise DatasetError(f"{source}: the concept vocabulary is empty")
        return cls(phrases)

    @property
    def concepts(self) -> list[str]:
        return list(self.phrases)

    def to_dict(self) -> dict[str, list[str]]:
        return {c: list(p) for c, p in self.phrases.items()}


def pseudo_phrase(phrase: str, concept: str) -> str | None:
    """``phrase`` with the first whole-word occurrence of ``concept`` replaced by ``$`` (``None`` if absent)."""
    if PLACEHOLDER in phrase:
        return None
    pattern = re.compile(rf"(?<!\w){re.escape(concept)}(?!\w)", re.IGNORECASE)
    replaced, count = pattern.subn(PLACEHOLDER, phrase, count=1)
    return replaced if count else None


@dataclass
class ConceptBank:
    """A vocabulary encoded by one encoder: concept features (to pick each image's nearest concepts) and, per
    phrase, its real text feature and its ``$`` version."""

    concept_features: torch.Tensor  # (C, D) normalised
    phrase_concept: torch.Tensor  # (P,) concept index of each phrase
    phrase_features: torch.Tensor  # (P, D) normalised
    pseudo_phrases: list[str]
    phrases_of: list[torch.Tensor]  # per concept: indices of its phrases

    @classmethod
    def build(cls, encoder: Encoder, vocabulary: ConceptVocabulary) -> ConceptBank:
        concepts = vocabulary.concepts
        phrase_rows, owners, pseudo = [], [], []
        for index, concept in enumerate(concepts):
            for phrase in vocabulary.phrases[concept]:
                phrase_rows.append(phrase)
                owners.append(index)
                pseudo.append(pseudo_phrase(phrase, concept) or "")
        concept_features = torch.from_numpy(encoder.encode_texts([f"a photo of {c}" for c in concepts]))
        phrase_features = torch.from_numpy(encoder.encode_texts(phrase_rows))
        owner = torch.tensor(owners)
        phrases_of = [torch.nonzero(owner == i).flatten() for i in range(len(concepts))]
        return cls(concept_features, owner, phrase_features, pseudo, phrases_of)

    def nearest_concepts(self, image_features: torch.Tensor, top_k: int) -> torch.Tensor:
        """Indices ``(B, k)`` of each image's ``top_k`` most similar concepts."""
        k = max(1, min(top_k, self.concept_features.shape[0]))
        sims = image_features.float().cpu() @ self.concept_features.T
        return sims.topk(k, dim=1).indices

    def sample_phrases(self, nearest: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One phrase index per image: a random concept among its nearest, then a random phrase of it."""
        rows = torch.arange(nearest.shape[0])
        pick = torch.randint(0, nearest.shape[1], (nearest.shape[0],), generator=generator)
        concepts = nearest[rows, pick].tolist()
        chosen = []
        for concept in concepts:
            options = self.phrases_of[concept]
            chosen.append(int(options[torch.randint(0, len(options), (1,), generator=generator)]))
        return torch.tensor(chosen)

    def regularisation(self, encoder: Encoder, tokens: torch.Tensor, phrase_rows: torch.Tensor) -> torch.Tensor:
        """Mean ``1 − cos`` between each phrase with ``$`` = token and the real phrase (per row of ``tokens``)."""
        texts = [self.pseudo_phrases[i] for i in phrase_rows.tolist()]
        pseudo = encoder.text_features_with_pseudo_tokens(texts, tokens)
        real = self.phrase_features[phrase_rows].to(pseudo.device)
        return (1 - F.cosine_similarity(pseudo.float(), real, dim=-1)).mean()
