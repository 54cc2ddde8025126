"""Describe what changed between two images: a trained CLIP4IDC captioner, or zero-shot with no training.

Python API::

    from clipmath.caption.difference import caption_difference, difference_vector

    caption_difference("before.png", "after.png", checkpoint="idc-caption/")      # trained (CLIP4IDC stage 2)
    caption_difference("before.png", "after.png", encoder=enc, lm=lm)  # zero-shot (a decoder on after − before)
    query = difference_vector(enc, "before.png", "after.png", reference=vec)      # search: changed like this pair

* **Trained** (:class:`TrainedDifferenceCaptioner`): the checkpoint of ``clipmath train idc-caption``; the
  pair encoder reads both images, the decoder writes the caption with beam search.
* **Zero-shot** (:func:`zero_shot_difference`): a caption decoder of ``DECODERS`` on
  ``w_after·e(after) − w_before·e(before)`` (normalised image embeddings): MAGIC or ZeroCap (a language model,
  continuing ``prompt``), the nearest corpus caption (``memory``) or DeCap (``decap``), which need no language model.
  It says what the direction points to ("a red cube"); it is no match for a trained captioner on a dataset's own
  phrasing.
* **Search by difference** (:func:`difference_vector`): the unit vector ``after − before`` (optionally added to a
  reference embedding with weight ``lam``): hand it to :func:`clipmath.search.make_index` ``.search`` to find images
  that changed the same way, or that look like the reference changed like the pair.

Bad input gets a one-line :class:`~clipmath.errors.CaptionError`: an unreadable or corrupt image, a checkpoint of
another kind or encoder. An "after" image of another size than "before" is resized to the "before" size (both are then
preprocessed as the encoder does). Zero-shot, identical images are answered "no change" without running a model; a
trained captioner runs as usual (it learned what to say for unchanged pairs from the distractors it was trained on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops

from clipmath.caption.difference_model import DifferenceCaptioner, build_captioner, decode_tokens
from clipmath.compose.checkpoint import load_checkpoint
from clipmath.compose.values import check_weight
from clipmath.encoders.base import Encoder
from clipmath.encoders.pair import make_pair_encoder
from clipmath.errors import CaptionError, ClipmathError

CAPTION_KIND = "idc-caption"
DEFAULT_PROMPT = "Now there is a"
NO_CHANGE = "no change"
ImageInput = str | Path | Image.Image


@dataclass(frozen=True)
class DifferenceCaption:
    """A difference caption; ``mode`` is ``trained``, ``zero-shot`` or ``identical``; ``model`` says which ran."""

    text: str
    mode: str
    model: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def open_pair(before: ImageInput, after: ImageInput) -> tuple[Image.Image, Image.Image]:
    """Decode both images (RGB); an "after" of another size is resized to the "before" size."""
    first, second = _open(before, "before"), _open(after, "after")
    if second.size != first.size:
        second = second.resize(first.size, Image.Resampling.BICUBIC)
    return first, second


def identical(before: Image.Image, after: Image.Image) -> bool:
    return before.size == after.size and ImageChops.difference(before, after).getbbox() is None


class TrainedDifferenceCaptioner:
    """A trained CLIP4IDC captioner (a ``clipmath train idc-caption`` checkpoint) on its encoder."""

    def __init__(self, encoder: Encoder, model: DifferenceCaptioner, beam_size: int = 3, label: str = "") -> None:
        self.encoder = encoder
        self.model = model.eval()
        self.beam_size = beam_size
        self.label = label or f"CLIP4IDC captioner on {encoder.info.label()}"

    @classmethod
    def load(
        cls, checkpoint: str | Path, encoder: Encoder | None = None, device: str = "cpu"
    ) -> TrainedDifferenceCaptioner:
        """Load a checkpoint; ``encoder`` defaults to the model it was trained on (by its id)."""
        loaded = load_checkpoint(checkpoint)
        if loaded.kind != CAPTION_KIND:
            raise CaptionError(
                f"{checkpoint} is a '{loaded.kind}' checkpoint, not a difference captioner ('{CAPTION_KIND}', "
                "made by `clipmath train idc-caption`)"
            )
        if encoder is None:
            if loaded.model_id.startswith("local:"):
                raise CaptionError(
                    f"{checkpoint} was trained on a model folder ({loaded.model_id}): give that folder as the 'model'"
                )
            from clipmath.encoders import load_encoder

            encoder = load_encoder(loaded.model_id, device=device)
        try:
            loaded.check_encoder(encoder)
        except ClipmathError as exc:
            raise CaptionError(str(exc)) from None
        config = loaded.config
        model = build_captioner(
            make_pair_encoder(encoder),
            encoder,
            layers=int(config.get("decoder_layers", 3)),
            heads=config.get("decoder_heads"),
            max_tokens=int(config.get("max_words", 32)),
            dropout=float(config.get("dropout", 0.1)),
        )
        try:
            model.load_state_dict(loaded.tensors)
        except RuntimeError as exc:
            raise CaptionError(f"{checkpoint} does not fit this model: {str(exc).splitlines()[0]}") from None
        return cls(encoder, model, int(config.get("beam_size", 3)))

    @torch.no_grad()
    def describe(
        self, befores: Sequence[Image.Image], afters: Sequence[Image.Image], beam_size: int | None = None
    ) -> list[str]:
        """Captions of pairs of decoded images (one per pair)."""
        if len(befores) != len(afters):
            raise CaptionError(f"{len(befores)} 'before' images but {len(afters)} 'after' images")
        if not befores:
            return []
        before = self.encoder.load_images(list(befores)).float()
        after = self.encoder.load_images(list(afters)).float()
        ids = self.model.generate(before, after, beam_size=beam_size or self.beam_size)
        return [decode_tokens(self.encoder.tokenizer, row) for row in ids]

    def caption(self, before: ImageInput, after: ImageInput) -> DifferenceCaption:
        first, second = open_pair(before, after)
        return DifferenceCaption(self.describe([first], [second])[0], "trained", self.label)


def check_weights(weights: Sequence[object]) -> tuple[float, float]:
    """``(before_weight, after_weight)`` checked as ``lam`` is (finite, magnitude at most MAX_WEIGHT)."""
    if len(weights) != 2:
        raise CaptionError(f"a difference takes two weights (before, after), not {len(weights)}")
    return check_weight(weights[0], "before_weight"), check_weight(weights[1], "after_weight")


def difference_vector(
    encoder: Encoder,
    before: ImageInput,
    after: ImageInput,
    weights: tuple[float, float] = (1.0, 1.0),
    reference: np.ndarray | None = None,
    lam: float = 1.0,
) -> np.ndarray:
    """Unit vector ``w_after·e(after) − w_before·e(before)``; with ``reference``, unit ``reference + lam·that``."""
    first, second = open_pair(before, after)
    if identical(first, second):
        raise CaptionError("the two images are identical: there is no difference to follow")
    vectors = encoder.encode_images([first, second])
    return direction_between(vectors[0], vectors[1], weights, reference, lam)


def direction_between(
    before: np.ndarray,
    after: np.ndarray,
    weights: tuple[float, float] = (1.0, 1.0),
    reference: np.ndarray | None = None,
    lam: float = 1.0,
) -> np.ndarray:
    """:func:`difference_vector` of two embeddings already made (a store's vectors: nothing is encoded)."""
    w_before, w_after = check_weights(weights)
    lam = check_weight(lam, "lam")
    direction = w_after * np.asarray(after, dtype=np.float32) - w_before * np.asarray(before, dtype=np.float32)
    norm = float(np.linalg.norm(direction))
    if not np.isfinite(norm) or norm < 1e-8:
        raise CaptionError("the two images embed to the same vector: there is no difference to follow")
    direction = direction / norm
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32).reshape(-1)
        if reference.shape[0] != direction.shape[0]:
            raise CaptionError(
                f"the reference vector is {reference.shape[0]}-d; the model embeds in {direction.shape[0]}-d"
            )
        direction = reference / max(float(np.linalg.norm(reference)), 1e-12) + lam * direction
        direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
    return direction.astype(np.float32)


def zero_shot_difference(
    before: ImageInput,
    after: ImageInput,
    encoder: Encoder,
    lm,
    weights: tuple[float, float] = (1.0, 1.0),
    prompt: str = DEFAULT_PROMPT,
    decoder: str | None = None,
    vectors: tuple[np.ndarray, np.ndarray] | None = None,
    **decoder_options: object,
) -> DifferenceCaption:
    """A caption decoder of :data:`clipmath.caption.DECODERS` on the embedding difference (no training).

    ``decoder`` defaults to :func:`zero_shot_decoder`'s choice; ``lm`` may be ``None`` for a decoder without a language
    model (``uses_lm`` false); ``decoder_options`` are fields of its options dataclass. ``vectors``: the two images'
    embeddings when already made (a store's): the images are then only compared, not encoded.
    """
    weights = check_weights(weights)
    spec = zero_shot_decoder(decoder)
    name = spec.name
    label = f"zero-shot {name} ({_label(lm) if spec.uses_lm else 'no language model'}) on {encoder.info.label()}"
    first, second = open_pair(before, after)
    if identical(first, second):
        return DifferenceCaption(NO_CHANGE, "identical", label)
    try:
        if vectors is not None:
            target = direction_between(vectors[0], vectors[1], weights)
        else:
            target = difference_vector(encoder, first, second, weights)
    except CaptionError:
        return DifferenceCaption(NO_CHANGE, "identical", label)
    fields = {f.name for f in dataclasses.fields(spec.options_class())}
    prompt_field = next((f for f in ("cond_text", "prompt") if f in fields), None)
    options = {prompt_field: prompt, **decoder_options} if prompt_field else dict(decoder_options)
    best = spec.create(lm, encoder, **options).caption(target)[0]
    return DifferenceCaption(best.full_text, "zero-shot", label)


def zero_shot_decoder(name: str | None = None):
    """The :class:`~clipmath.caption.decoders.DecoderSpec` of ``name``; ``None``: the fastest LM decoder registered
    (``magic`` when present, else ``zerocap``)."""
    from clipmath.caption.decoders import DECODERS

    return DECODERS.get(name or ("magic" if "magic" in DECODERS.names() else "zerocap"))


def _needs_lm(decoder: object) -> bool:
    return zero_shot_decoder(None if decoder is None else str(decoder)).uses_lm


def _label(lm) -> str:
    label = getattr(lm, "label", None)
    return label() if callable(label) else str(getattr(lm, "name", "language model"))


def caption_difference(
    before: ImageInput,
    after: ImageInput,
    checkpoint: str | Path | TrainedDifferenceCaptioner | None = None,
    encoder: Encoder | None = None,
    lm=None,
    **options: object,
) -> DifferenceCaption:
    """One difference caption: the trained captioner when ``checkpoint`` is given, zero-shot otherwise.

    This is what ``clipmath diff-caption`` and the server's ``/api/caption/difference`` call. Zero-shot needs
    ``encoder`` and ``lm`` (a :class:`~clipmath.caption.LanguageModel`); ``options`` go to :func:`zero_shot_difference`.
    """
    if checkpoint is not None:
        captioner = (
            checkpoint
            if isinstance(checkpoint, TrainedDifferenceCaptioner)
            else TrainedDifferenceCaptioner.load(checkpoint, encoder)
        )
        return captioner.caption(before, after)
    if encoder is None or (lm is None and _needs_lm(options.get("decoder"))):
        raise CaptionError("zero-shot difference captions need an encoder and a language model (or give a checkpoint)")
    return zero_shot_difference(before, after, encoder, lm, **options)


def _open(image: ImageInput, which: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from clipmath.store.images import ImageDecodeError, decode_image

    path = Path(image)
    try:
        return decode_image(path)
    except FileNotFoundError:
        raise CaptionError(f"the '{which}' image was not found: {path}") from None
    except ImageDecodeError as exc:
        raise CaptionError(f"cannot read the '{which}' image {path}: {exc}") from None


def difference_fn(checkpoint: str | Path | None = None, encoder: Encoder | None = None, lm=None, **options: object):
    """A ``(before, after) -> str`` function for the server's captioner (``FunctionCaptioner(difference_fn=...)``).

    ``before``/``after`` are anything with an ``image`` (a PIL image, e.g. the server's caption subjects) or images
    and paths themselves. A checkpoint is loaded once, here; without one the captions are zero-shot, on the
    subjects' ``vector`` when they carry one (a stored or uploaded image's embedding).
    """
    trained = TrainedDifferenceCaptioner.load(checkpoint, encoder) if checkpoint is not None else None

    def describe(before: object, after: object) -> str:
        first = getattr(before, "image", before)
        second = getattr(after, "image", after)
        stored = (getattr(before, "vector", None), getattr(after, "vector", None))
        own = trained is None and stored[0] is not None and stored[1] is not None
        extra = {"vectors": stored} if own else {}  # zero-shot on the subjects' own embeddings: nothing re-encoded
        return caption_difference(first, second, trained, encoder, lm, **options, **extra).text

    return describe
