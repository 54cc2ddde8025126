"""The plug-in point for captioning: the server calls a :class:`Captioner` if it was given one.

Captioning lives in :mod:`clipmath.caption`; the server does not depend on it. To enable the caption endpoints,
pass ``create_app(retriever, config, captioner=...)`` any object with this shape, e.g. one built with
:class:`FunctionCaptioner` from plain functions. Each subject carries the embedding (always) and the decoded image
(a gallery file or an upload, downscaled), so a captioner can work from either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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
