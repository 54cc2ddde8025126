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
    """A :class:`Captioner` from two functions (``difference`` may be None: that endpoint then answers 501)."""

    label: str
    caption_fn: Callable[[Sequence[CaptionSubject]], list[str]]
    difference_fn: Callable[[CaptionSubject, CaptionSubject], str] | None = None

    def caption(self, subjects: Sequence[CaptionSubject]) -> list[str]:
        return list(self.caption_fn(subjects))

    def difference(self, before: CaptionSubject, after: CaptionSubject) -> str:
        if self.difference_fn is None:
            raise NotImplementedError("this captioner has no difference captions")
        return self.difference_fn(before, after)
