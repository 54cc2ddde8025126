"""Captions as a service: what a front end (the HTTP server, a notebook) calls to caption images and differences.

:func:`make_captioner` assembles one from names (a language model, a caption decoder, a CLIP4IDC checkpoint);
any object with the :class:`Captioner` shape works too, e.g. a :class:`FunctionCaptioner` over plain functions.
Each subject carries its embedding (always) and its decoded image, so a captioner can work from either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image


@dataclass
class CaptionSubject:
    """One image to describe: its L2-normalised embedding in the store's space, and its pixels."""

    vector: np.ndarray  # (D,) float32
    image: Image.Image
    label: str  # gallery id, or "upload:<id>"


class Captioner(Protocol):
    """What the caption endpoints call. ``label`` says which model captions (shown to the user)."""

    label: str

    def caption(self, subjects: Sequence[CaptionSubject]) -> list[str]:
        """One caption per subject."""
        ...

    def difference(self, before: CaptionSubject, after: CaptionSubject) -> str:
        """A phrase saying what changed from ``before`` to ``after``."""
        ...


@dataclass
class FunctionCaptioner:
    """A :class:`Captioner` from two functions; either may be None: its endpoint then answers 501.

    ``difference_label`` names the model of difference captions when it is not the one of ``label``.
    """

    label: str
    caption_fn: Callable[[Sequence[CaptionSubject]], list[str]] | None = None
    difference_fn: Callable[[CaptionSubject, CaptionSubject], str] | None = None
    difference_label: str = ""

    @property
    def captions_label(self) -> str | None:
        """Who writes image captions, or None when there are none."""
        return self.label if self.caption_fn is not None else None

    @property
    def differences_label(self) -> str | None:
        """Who writes difference captions, or None when there are none."""
        return (self.difference_label or self.label) if self.difference_fn is not None else None

    def caption(self, subjects: Sequence[CaptionSubject]) -> list[str]:
        if self.caption_fn is None:
            raise NotImplementedError("this captioner has no image captions")
        return list(self.caption_fn(subjects))

    def difference(self, before: CaptionSubject, after: CaptionSubject) -> str:
        if self.difference_fn is None:
            raise NotImplementedError("this captioner has no difference captions")
        return self.difference_fn(before, after)


def captions_label(captioner: Captioner | None) -> str | None:
    """The label shown for image captions (None when off); a plain :class:`Captioner` does both."""
    if captioner is None:
        return None
    return getattr(captioner, "captions_label", captioner.label)


def differences_label(captioner: Captioner | None) -> str | None:
    """The label shown for difference captions (None when off)."""
    if captioner is None:
        return None
    return getattr(captioner, "differences_label", captioner.label)


def make_captioner(
    encoder: Any,
    language_model: str | None = None,
    difference_checkpoint: str | Path | None = None,
    decoder: str = "magic",
    device: str = "cpu",
    decoder_options: Mapping[str, Any] | None = None,
) -> FunctionCaptioner | None:
    """A captioner for ``encoder``'s space, or ``None`` when captions are not asked for: a decoder that uses a
    language model needs ``language_model``, one that does not (memory, DeCap) needs its ``decoder_options``
    (its corpus or checkpoint), and difference captions alone need ``difference_checkpoint``.

    Image captions: ``decoder`` (a :data:`clipmath.caption.DECODERS` entry) steered by the subject's embedding.
    Difference captions: the trained CLIP4IDC ``difference_checkpoint`` when given (made in ``encoder``'s space),
    else zero-shot with the same decoder on ``after − before``.
    """
    from clipmath.caption.decoders import DECODERS

    spec = DECODERS.get(decoder)  # an unknown name: one line, with the close matches
    options = dict(decoder_options or {})
    enabled = bool(language_model) if spec.uses_lm else bool(options)
    if not enabled and difference_checkpoint is None:
        return None
    from clipmath.caption.difference import difference_fn

    caption_fn = describe_difference = None
    label = difference_label = ""
    if enabled:
        lm = None
        if spec.uses_lm:
            from clipmath.caption.language_models import load_language_model

            lm = load_language_model(language_model, device=device)
        image_decoder = spec.create(lm, encoder, **options)
        by = lm.label() if lm is not None else encoder.info.label()
        label = f"{spec.shown_name()} · {by}"

        def caption_fn(subjects: Sequence[CaptionSubject]) -> list[str]:
            return [image_decoder.caption(subject.vector)[0].full_text for subject in subjects]

        describe_difference = difference_fn(encoder=encoder, lm=lm, decoder=spec.name, **options)
        difference_label = f"zero-shot {spec.shown_name()} · {by}"
    if difference_checkpoint is not None:
        describe_difference = difference_fn(Path(difference_checkpoint), encoder)
        difference_label = f"CLIP4IDC {Path(difference_checkpoint).name} on {encoder.info.label()}"
    return FunctionCaptioner(label or difference_label, caption_fn, describe_difference, difference_label)
