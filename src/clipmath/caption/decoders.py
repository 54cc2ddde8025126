"""What every caption decoder shares: the :class:`Caption` result, the target vector, text scoring, progress, and
the decoder registry :data:`DECODERS`.

    from clipmath.caption import DECODERS
    spec = DECODERS.get("magic")                        # or "zerocap", "memory", "decap"
    decoder = spec.create(lm, encoder, beam_width=8)    # options: fields of spec.options_class()
    best = decoder.caption(target_vector)[0]            # any (D,) vector of the encoder's space
    print(best.full_text, best.clip_score, best.seconds)

A decoder is any object with ``caption(target, config=None, progress=False) -> list[Caption]`` (best first).
``progress`` is ``True`` (a tqdm bar per token), ``False``, or a callback ``(tokens_done, max_tokens)`` called after
every token, for front ends that draw their own progress.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from clipmath.encoders.base import Encoder
from clipmath.errors import CaptionError
from clipmath.registry import Registry, import_ref

ProgressCallback = Callable[[int, int], None]
Progress = bool | ProgressCallback


@dataclass(frozen=True)
class Caption:
    """One caption with its scores.

    ``clip_score`` is the cosine between the target and the encoder's embedding of ``text`` (the caption without
    the prompt, as ZeroCap ranks its beams); ``lm_score`` is the mean log-probability per token under the
    decoder's distribution. ``continuation`` is the decoded text exactly as it follows the prompt. ``seconds`` is
    the wall time the decoder spent on this target (all beams together).
    """

    text: str
    prompt: str
    clip_score: float
    lm_score: float
    continuation: str = ""
    tokens: tuple[int, ...] = field(default=(), repr=False)
    seconds: float = field(default=0.0, compare=False)

    @property
    def full_text(self) -> str:
        """Prompt and caption as one sentence ("Image of a cat on a sofa.")."""
        return (self.prompt + (self.continuation or " " + self.text)).strip()


class CaptionDecoder(Protocol):
    """What :meth:`DecoderSpec.create` returns."""

    def caption(
        self, target_embedding: np.ndarray | torch.Tensor, config: Any = None, progress: Progress = False
    ) -> list[Caption]: ...


@dataclass(frozen=True)
class DecoderSpec:
    """A caption decoder: its name, what it does, and lazy references to its class and its options dataclass."""

    name: str
    description: str
    build: str  # "module:Class", called as Class(lm, encoder, options)
    options: str  # "module:OptionsDataclass" (fields declared with clipmath.options.setting)
    title: str = ""  # the name as papers print it (default: the registry name)
    presets: str | None = None  # "module:DICT" of named option sets, e.g. ZeroCap's tuned settings per task
    uses_lm: bool = True  # False: the decoder ignores ``lm`` (front ends need not load one; pass None)

    def shown_name(self) -> str:
        return self.title or self.name

    def preset_options(self, name: str | None) -> Any:
        """The named option set (``None``: the options' defaults); :class:`CaptionError` for an unknown name."""
        if name is None:
            return self.options_class()()
        presets = import_ref(self.presets) if self.presets else {}
        if name not in presets:
            having = f"use one of {', '.join(presets)}" if presets else f"{self.shown_name()} has no presets"
            raise CaptionError(f"unknown preset {name!r}: {having}")
        return presets[name]

    def options_class(self) -> type:
        return import_ref(self.options)

    def make_options(self, base: Any = None, **overrides: object) -> Any:
        """The options dataclass with its defaults (or ``base``), single fields replaced; unknown ones raise."""
        cls = self.options_class()
        base = base if base is not None else cls()
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise CaptionError(f"unknown {self.name} option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(base, **overrides) if overrides else base

    def create(self, lm: Any, encoder: Encoder, options: Any = None, **overrides: object) -> CaptionDecoder:
        """A decoder for ``lm`` and ``encoder`` with these options."""
        return import_ref(self.build)(lm, encoder, self.make_options(options, **overrides))


#: Every caption decoder; built-ins are registered by ``clipmath.caption.builtin_decoders``.
DECODERS: Registry[DecoderSpec] = Registry(
    "caption decoder", error=CaptionError, builtins="clipmath.caption.builtin_decoders"
)


# ---- shared pieces of decoding ----------------------------------------------------------------------------------
def target_tensor(target_embedding: np.ndarray | torch.Tensor, encoder: Encoder, device: torch.device) -> torch.Tensor:
    """The target as a unit float32 vector on ``device`` (the LM's: every score is combined with LM outputs)."""
    if isinstance(target_embedding, torch.Tensor):
        target_embedding = target_embedding.detach().float().cpu().numpy()
    vector = torch.as_tensor(np.array(target_embedding, dtype=np.float32)).flatten()
    if vector.numel() != encoder.dim:
        raise CaptionError(
            f"target embedding has {vector.numel()} values but {encoder.info.model_id} embeds in "
            f"{encoder.dim}-d: embed the target with the same model"
        )
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise CaptionError("target embedding is zero or not finite")
    return (vector / norm).to(device)


class TextEmbeddings:
    """The encoder's normalised embeddings of texts, memoised (decoders re-score mostly the same texts).

    Texts that the encoder's tokenizer turns into the same tokens (CLIP and MiniLM lower-case: " Cat" and " cat")
    are encoded once. Misses are encoded in one call, shortest first in batches of ``batch_size`` (less padding).
    On CUDA the text encoder may run in half precision (``half=True``); embeddings are float32 either way. The memo
    holds at most ``capacity`` texts (least recently added dropped first).
    """

    def __init__(self, encoder: Encoder, batch_size: int = 256, capacity: int = 200_000, half: bool = False) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.capacity = capacity
        self.half = half
        self.threads = 0  # torch intra-op threads while encoding (0: whatever is set when called)
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._by_tokens: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.encoded = 0  # texts run through the encoder so far

    def clear(self) -> None:
        self._memo.clear()
        self._by_tokens.clear()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), D)`` float32, one row per text."""
        memo = self._memo
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            self._fill(missing)
        rows = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            rows[i] = memo[text]
        for table in (memo, self._by_tokens):
            for _ in range(len(table) - self.capacity):
                table.popitem(last=False)
        return rows

    def _fill(self, texts: list[str]) -> None:
        keys = self._token_keys(texts)
        new: dict[tuple[int, ...], str] = {}
        for key, text in zip(keys, texts):
            if key not in self._by_tokens:
                new.setdefault(key, text)
        if new:
            feats = self._encode_sorted(list(new.values()), [len(key) for key in new])
            self._by_tokens.update(zip(new, feats))
            self.encoded += len(new)
        self._memo.update((text, self._by_tokens[key]) for text, key in zip(texts, keys))

    def _token_keys(self, texts: list[str]) -> list[tuple[int, ...]]:
        """What the text tower sees of each text: its token ids (padding dropped)."""
        tokens = self.encoder.tokenize(texts)
        ids, mask = tokens["input_ids"].cpu(), tokens["attention_mask"].cpu().bool()
        return [tuple(row[keep].tolist()) for row, keep in zip(ids, mask)]

    def _encode_sorted(self, texts: list[str], lengths: list[int]) -> np.ndarray:
        """Encode in batches of similar token counts (little padding); rows back in the given order."""
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        ordered = [texts[i] for i in order]
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        with _half_precision(self.encoder, self.half), torch_threads(self.threads):
            feats = self.encoder.encode_texts(ordered, batch_size=self.batch_size)
        out[order] = feats
        return out


class _half_precision:
    """Within the block, the encoder's text tower runs in float16 (CUDA only; a no-op elsewhere)."""

    def __init__(self, encoder: Encoder, enabled: bool) -> None:
        self.enabled = enabled and getattr(encoder, "device", torch.device("cpu")).type == "cuda"

    def __enter__(self) -> None:
        if self.enabled:
            self._autocast = torch.autocast("cuda", dtype=torch.float16)
            self._autocast.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._autocast.__exit__(*exc)


class torch_threads:
    """Within the block torch runs ``count`` intra-op threads (``0``: unchanged); the previous count comes back after.

    The decoders run the LM's per-token passes (a handful of rows) on one thread: such small products gain nothing
    from more, and on a busy machine every extra thread waits at each of the thousands of barriers per caption
    (measured: 2-3x the wall time). The text encoder's large batches keep the caller's threads.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._previous = 0

    def __enter__(self) -> None:
        if self.count > 0:
            self._previous = torch.get_num_threads()
            torch.set_num_threads(self.count)

    def __exit__(self, *exc: object) -> None:
        if self.count > 0:
            torch.set_num_threads(self._previous)


class TokenProgress:
    """Per-token progress: a tqdm bar (``progress=True``), a callback, or nothing."""

    def __init__(self, progress: Progress, total: int, desc: str) -> None:
        self.total = total
        self.done = 0
        self._callback = progress if callable(progress) else None
        self._bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="token")

    def step(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> TokenProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GuidedDecoder:
    """What the decoders share: the LM, the encoder, default options, vocabulary tables and the text memo.

    Subclasses set ``options_class`` and implement ``caption``; decoding runs on the LM's device.
    """

    options_class: type

    def __init__(self, lm: Any, encoder: Encoder, config: Any = None) -> None:
        self.lm = lm
        self.encoder = encoder
        self.config = config if config is not None else self.options_class()
        self.vocab = Vocabulary(lm)
        # Kept across captions: a text's embedding depends on the encoder only (a bounded memo).
        self._texts = TextEmbeddings(encoder, half=self.config.half_precision_text)

    @property
    def device(self) -> torch.device:
        """Where decoding runs: the LM's device (the target and every score are moved there)."""
        return self.lm.device

    def lm_threads(self, count: int) -> torch_threads:
        """A block in which the LM's passes run on ``count`` CPU threads and the text encoder on the caller's."""
        on_cpu = self.device.type == "cpu"
        self._texts.threads = torch.get_num_threads() if count and on_cpu else 0
        return torch_threads(count if on_cpu else 0)

    def prompt_ids(self, cond_text: str) -> list[int]:
        """Token ids of the LM's context prefix and the prompt; raises if there are none."""
        ids = self.lm.encode(self.lm.context_prefix + cond_text)
        if not ids:
            raise CaptionError("empty prompt: give a prompt, or use an LM with a start token")
        return ids


_NUMERAL = re.compile(r"\s*\d+\s*")


class Vocabulary:
    """Per-LM token tables the decoders share: each token's text, tokens never generated, numerals, end tokens."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self._texts: list[str] | None = None
        self._banned: torch.Tensor | None = None
        self._numerals: torch.Tensor | None = None

    @property
    def texts(self) -> list[str]:
        """Decoded text of every vocabulary id (how a candidate token extends the caption); specials are ''."""
        if self._texts is None:
            specials = set(self.lm.special_token_ids())
            decode = self.lm.tokenizer.decode
            self._texts = ["" if i in specials else decode([i]) for i in range(self.lm.vocab_size)]
        return self._texts

    def banned(self, device: torch.device) -> torch.Tensor:
        """Tokens a one-line caption never contains: special markers (except end-of-text) and line breaks."""
        if self._banned is None:
            keep = set(self.lm.end_of_text_ids())
            specials = [i for i in self.lm.special_token_ids() if i not in keep]
            breaks = [i for i, text in enumerate(self.texts) if "\n" in text or "\r" in text]
            self._banned = torch.tensor(sorted(set(specials) | set(breaks)), dtype=torch.long)
        return self._banned.to(device)

    def numerals(self, device: torch.device) -> torch.Tensor:
        """Tokens that are numbers (ZeroCap discourages them)."""
        if self._numerals is None:
            ids = [i for i, text in enumerate(self.texts) if _NUMERAL.fullmatch(text)]
            self._numerals = torch.tensor(ids, dtype=torch.long)
        return self._numerals.to(device)

    def end_ids(self, end_token: str) -> list[int]:
        """The one token id of ``end_token``; raises if the LM splits it."""
        ids = self.lm.encode(end_token)
        if len(ids) != 1:
            raise CaptionError(f"end token {end_token!r} is not a single token of {self.lm.model_id}")
        return ids

    def stop_ids(self, end_token: str) -> list[int]:
        """Tokens that end a caption: ``end_token`` and the LM's end-of-text."""
        return sorted(set(self.end_ids(end_token)) | set(self.lm.end_of_text_ids()))


def decoder_names() -> list[str]:
    """Registered decoder names (for option choices)."""
    return DECODERS.names()
