"""A caption memory: a text corpus embedded once by the encoder, and the two things decoders do with it.

* :meth:`CaptionMemory.nearest` — the corpus captions closest to any vector of the encoder's space (an image, an
  expression such as ``woman + king − man``, the difference of two images): the ``memory`` decoder.
* :meth:`CaptionMemory.project` — DeCap's projection of a vector onto the memory: the softmax-weighted sum of
  corpus text embeddings, ``normalise(Σ_i softmax(v·t_i / τ) t_i)``, which carries an image embedding across the
  modality gap into the region of text embeddings a text-only decoder was trained on.

The corpus embeddings are cached under :func:`clipmath.paths.cache_dir` (``caption-memory/``) as one ``.npy`` and a
JSON description, keyed by the SHA-256 of the corpus texts and the encoder's ``model_id``. Both files are written to
a temporary name and renamed into place (an interrupted write leaves no cache, never a half one); on load the
description must match (model, texts, shape) and a few corpus texts are re-embedded and compared, so a cache made by
other weights under the same model name is rebuilt, not trusted.

    memory = CaptionMemory.from_file("examples/caption-corpus/coco_captions.txt", encoder)
    for text, score in memory.nearest(encoder.encode_images([photo])[0], k=3):
        print(f"{score:.3f} {text}")
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipmath.caption.decoders import Caption, Progress, target_tensor
from clipmath.encoders.base import Encoder
from clipmath.errors import CaptionError
from clipmath.options import setting

CACHE_FOLDER = "caption-memory"
PROBES = 4  # corpus texts re-embedded to check a cache was made by these weights
PROBE_TOLERANCE = 1e-3
DECAP_TEMPERATURE = 0.01  # DeCap's projection: softmax(100 · cosine)


def read_corpus(path: str | Path) -> list[str]:
    """Caption texts from a file: one per line, or JSON (a list of strings, or of items with a ``captions`` list,
    or a dict of such items), runs of whitespace collapsed. Duplicates are kept (a caption said twice weighs twice).
    """
    from clipmath.data.captions import read_caption_texts

    path = Path(path).expanduser()
    if not path.is_file():
        raise CaptionError(f"caption corpus not found: {path}")
    texts = [" ".join(t.split()) for t in read_caption_texts(path)]
    if not texts:
        raise CaptionError(f"caption corpus {path} holds no captions")
    return texts


def corpus_digest(texts: Sequence[str]) -> str:
    """SHA-256 of the texts in order (what identifies a corpus, whatever file it came from)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()


class CaptionMemory:
    """Corpus captions and their unit embeddings ``(N, D)`` in one encoder's space."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, model_id: str, source: str = "") -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts) or not len(texts):
            raise CaptionError(f"a caption memory needs one vector per text ({len(texts)} texts, {vectors.shape})")
        self.texts = list(texts)
        self.vectors = vectors
        self.model_id = model_id
        self.source = source
        self._tensor = torch.from_numpy(vectors)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def digest(self) -> str:
        return corpus_digest(self.texts)

    @classmethod
    def build(
        cls, texts: Sequence[str], encoder: Encoder, source: str = "", cache: bool = True, progress: bool = False
    ) -> CaptionMemory:
        """Embed ``texts`` with ``encoder`` (or read them from the cache, checked) and cache them."""
        texts = [" ".join(str(t).split()) for t in texts]
        if not any(texts):
            raise CaptionError("a caption memory needs at least one caption")
        folder = cache_dir() if cache else None
        key = _cache_key(texts, encoder.info.model_id, encoder.dim)
        if folder is not None:
            vectors = _read_cache(folder, key, texts, encoder)
            if vectors is not None:
                return cls(texts, vectors, encoder.info.model_id, source)
        vectors = encoder.encode_texts(texts, progress=progress)
        if folder is not None:
            _write_cache(folder, key, texts, encoder, vectors, source)
        return cls(texts, vectors, encoder.info.model_id, source)

    @classmethod
    def from_file(cls, path: str | Path, encoder: Encoder, cache: bool = True, progress: bool = False) -> CaptionMemory:
        """The memory of a corpus file (see :func:`read_corpus`)."""
        return cls.build(read_corpus(path), encoder, str(path), cache=cache, progress=progress)

    def subset(self, size: int | None) -> CaptionMemory:
        """The first ``size`` captions (DeCap's memory-size ablation); ``None`` or more than there are: all."""
        if size is None or size >= len(self):
            return self
        if size < 1:
            raise CaptionError("memory_size must be at least 1")
        return CaptionMemory(self.texts[:size], self.vectors[:size], self.model_id, self.source)

    def check_space(self, encoder: Encoder) -> None:
        if encoder.info.model_id != self.model_id or encoder.dim != self.dim:
            raise CaptionError(
                f"the caption memory was embedded by {self.model_id} ({self.dim}-d); the encoder in use is "
                f"{encoder.info.model_id} ({encoder.dim}-d)"
            )

    def similarities(self, vector: torch.Tensor) -> torch.Tensor:
        """Cosine of a unit vector ``(D,)`` or rows ``(B, D)`` with every memory text: ``(N,)`` or ``(B, N)``."""
        return vector.float().cpu() @ self._tensor.T

    def nearest(self, vector: np.ndarray | torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` corpus captions closest to ``vector`` (any vector of the space; normalised here), best first."""
        unit = _unit(vector, self.dim)
        scores = self.similarities(unit)
        top = torch.topk(scores, min(max(1, k), len(self)))
        return [(self.texts[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def project(
        self, vectors: np.ndarray | torch.Tensor, temperature: float = DECAP_TEMPERATURE, nearest: int | None = None
    ) -> torch.Tensor:
        """DeCap's projection of unit rows ``(B, D)`` (or one ``(D,)``) onto the memory, as unit rows.

        Weights are ``softmax(cosine / temperature)`` over every memory text, or over the ``nearest`` most similar
        only (the rest weigh 0).
        """
        if temperature <= 0:
            raise CaptionError("the projection temperature must be positive")
        rows = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not torch.is_tensor(vectors) else vectors)
        single = rows.ndim == 1
        rows = torch.nn.functional.normalize(rows.reshape(-1, self.dim).float().cpu(), dim=-1)
        logits = self.similarities(rows) / temperature
        if nearest is not None and nearest < len(self):
            if nearest < 1:
                raise CaptionError("nearest must be at least 1")
            kth = torch.topk(logits, nearest, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        projected = torch.nn.functional.normalize(logits.softmax(dim=-1) @ self._tensor, dim=-1)
        return projected[0] if single else projected


def _unit(vector: np.ndarray | torch.Tensor, dim: int) -> torch.Tensor:
    vector = torch.as_tensor(np.asarray(vector, dtype=np.float32) if not torch.is_tensor(vector) else vector)
    vector = vector.detach().float().cpu().flatten()
    if vector.numel() != dim:
        raise CaptionError(f"the vector has {vector.numel()} values; the caption memory is {dim}-d")
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise CaptionError("the vector is zero or not finite")
    return vector / norm


# ---- the cache ----------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    from clipmath.paths import cache_dir as root

    folder = root() / CACHE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cache_key(texts: Sequence[str], model_id: str, dim: int) -> str:
    return hashlib.sha256(f"{model_id}\n{dim}\n{corpus_digest(texts)}".encode()).hexdigest()[:32]


def _probe_rows(count: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, count - 1, num=min(PROBES, count))})


def _read_cache(folder: Path, key: str, texts: Sequence[str], encoder: Encoder) -> np.ndarray | None:
    """The cached vectors when the cache describes exactly this corpus and model and its probes re-embed alike."""
    description, array = folder / f"{key}.json", folder / f"{key}.npy"
    try:
        meta = json.loads(description.read_text())
        vectors = np.load(array, allow_pickle=False)
    except (OSError, ValueError):
        return None
    expected = (len(texts), encoder.dim)
    if (
        meta.get("model_id") != encoder.info.model_id
        or meta.get("corpus_sha256") != corpus_digest(texts)
        or tuple(vectors.shape) != expected
        or vectors.dtype != np.float32
        or not np.isfinite(vectors).all()
    ):
        return None
    rows = _probe_rows(len(texts))
    fresh = encoder.encode_texts([texts[i] for i in rows])
    if not np.allclose(fresh, vectors[rows], atol=PROBE_TOLERANCE):
        return None  # same model name, other weights: rebuild
    return vectors


def _write_cache(
    folder: Path, key: str, texts: Sequence[str], encoder: Encoder, vectors: np.ndarray, source: str
) -> None:
    meta = {
        "model_id": encoder.info.model_id,
        "dim": encoder.dim,
        "count": len(texts),
        "corpus_sha256": corpus_digest(texts),
        "source": source,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for path, write in (
        (folder / f"{key}.npy", lambda f: np.save(f, np.asarray(vectors, dtype=np.float32), allow_pickle=False)),
        (folder / f"{key}.json", lambda f: f.write(json.dumps(meta, indent=1).encode())),
    ):
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(staging, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, path)
        except OSError:  # a read-only or full cache: the memory still works, uncached
            staging.unlink(missing_ok=True)
            return


# ---- the `memory` decoder -------------------------------------------------------------------------------------
@dataclass
class MemoryConfig:
    """Options of the ``memory`` decoder (nearest captions of a corpus; no language model, no training)."""

    corpus: str | None = setting(None, "The caption corpus: one caption a line, or JSON.")
    captions: int = setting(5, "How many nearest captions to return, best first.", minimum=1)


class MemoryDecoder:
    """Captions a vector with the nearest captions of a corpus (``lm`` is not used: any value, ``None`` included)."""

    options_class = MemoryConfig

    def __init__(self, lm: object, encoder: Encoder, config: MemoryConfig | None = None, memory=None) -> None:
        self.encoder = encoder
        self.config = config if config is not None else MemoryConfig()
        if memory is None:
            if not self.config.corpus:
                raise CaptionError("the memory decoder needs a caption corpus (the 'corpus' option)")
            memory = CaptionMemory.from_file(self.config.corpus, encoder, progress=True)
        memory.check_space(encoder)
        self.memory = memory

    def caption(
        self,
        target_embedding: np.ndarray | torch.Tensor,
        config: MemoryConfig | None = None,
        progress: Progress = False,
    ) -> list[Caption]:
        config = config or self.config
        started = time.perf_counter()
        target = target_tensor(target_embedding, self.encoder, torch.device("cpu"))
        found = self.memory.nearest(target, config.captions)
        seconds = time.perf_counter() - started
        return [Caption(text, "", score, 0.0, continuation=text, seconds=seconds) for text, score in found]


def _normalised(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


def overlapping_captions(corpus: Sequence[str], references: Sequence[str]) -> list[str]:
    """The reference captions that the corpus also holds (case, spacing and full stops ignored): a corpus used to
    caption evaluated photos must hold none of their references, or the scores measure a lookup."""
    held = {_normalised(t) for t in corpus}
    return sorted({r for r in references if _normalised(r) in held})
