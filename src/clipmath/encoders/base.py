"""The encoder protocol every model backend implements.

An encoder maps images and texts into one embedding space. Two layers are exposed:

* NumPy convenience (:meth:`Encoder.encode_images`, :meth:`Encoder.encode_texts`): batched, no gradients,
  L2-normalised float32 ``(N, D)`` arrays. This is what indexing, search and evaluation use.
* Torch building blocks (:meth:`Encoder.preprocess`, :meth:`Encoder.image_features`, :meth:`Encoder.tokenize`,
  :meth:`Encoder.text_features`): differentiable, unnormalised. Training and textual inversion use these, and
  :meth:`Encoder.text_features` accepts ``token_overrides`` so that chosen token positions carry given input
  embeddings (the pseudo-word ``$`` of SEARLE).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from clipmath.encoders.identity import EncoderInfo
from clipmath.encoders.pipeline import ImagePipeline, ImageSource, PixelBatch, PixelSpec, normalise, prepare_pixels
from clipmath.encoders.runtime import ThreadBudget, cuda_errors
from clipmath.encoders.transforms import ImageTransform, apply_pad
from clipmath.imageio import MAX_PIXELS, ImageDecodeError, decode_image

PLACEHOLDER = "$"


@dataclass
class EncodedFiles:
    """Embeddings of the sources that could be read (``vectors[i]`` is source ``indices[i]``, whose image is
    ``sizes[i]`` = ``(width, height)``) and the reasons the others could not (``failed``: ``(index, reason)``)."""

    vectors: np.ndarray
    indices: list[int]
    failed: list[tuple[int, str]]
    sizes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class TokenOverrides:
    """Input embeddings to place at the positions where ``mask`` is true (one row per true position)."""

    mask: torch.Tensor  # (B, L) bool
    embeddings: torch.Tensor  # (mask.sum(), E)


class Encoder(ABC):
    """Base class of all backends. Subclasses implement the five torch-level methods."""

    info: EncoderInfo
    device: torch.device
    transform: ImageTransform

    # ---- torch level: implemented by backends -------------------------------------------------------
    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Turn RGB PIL images (already padded by :attr:`transform`) into a pixel batch on :attr:`device`."""

    @abstractmethod
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``(B, D)``; differentiable."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise to model inputs on :attr:`device` (``input_ids``, ``attention_mask``)."""

    @abstractmethod
    def text_features(
        self, tokens: dict[str, torch.Tensor], token_overrides: TokenOverrides | None = None
    ) -> torch.Tensor:
        """Unnormalised text embeddings ``(B, D)``; differentiable, optionally with overridden token inputs."""

    @abstractmethod
    def token_embedding_table(self) -> torch.nn.Embedding:
        """The text encoder's input token-embedding table (its width is the pseudo-token width)."""

    @abstractmethod
    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """The image and text towers (``{"image": ..., "text": ...}``) for fine-tuning and checkpoints."""

    def pixel_spec(self) -> PixelSpec | None:
        """The model's resize/crop/normalise (without padding) for the fast pipeline; ``None``: use
        :meth:`preprocess` only (slow path)."""
        return None

    # ---- shared implementation ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def threads(self) -> ThreadBudget:
        """torch's CPU thread count for this encoder, applied in every thread that calls it."""
        budget = self.__dict__.get("_threads")
        if budget is None:
            budget = self.__dict__["_threads"] = ThreadBudget()
        return budget

    def set_threads(self, threads: int | None) -> None:
        """Use ``threads`` CPU threads for torch in every thread that calls this encoder, and as many image
        worker processes by default (``None``: unchanged)."""
        if threads:
            self.threads.set(threads)
            self.__dict__["_workers"] = int(threads)

    def pipeline_spec(self) -> PixelSpec | None:
        """:meth:`pixel_spec` with this encoder's padding (``targetpad``) included."""
        spec = self.pixel_spec()
        if spec is None:
            return None
        return spec.with_pad(self.transform.target_ratio if self.transform.mode == "targetpad" else None)

    def load_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pad (if the transform asks for it), convert to RGB and preprocess a list of PIL images."""
        spec = self.pipeline_spec()
        if spec is not None:
            return self.pixels_from_uint8(_stack_pixels([prepare_pixels(img, spec) for img in images], spec))
        prepared = [apply_pad(img.convert("RGB"), self.transform) for img in images]
        return self.preprocess(prepared)

    def pixels_from_uint8(self, pixels: np.ndarray) -> torch.Tensor:
        """Prepared uint8 crops ``(B, H, W, 3)`` → the model's normalised pixel batch on its device."""
        spec = self.pixel_spec()
        if spec is None:
            raise TypeError(f"{type(self).__name__} has no fast pixel pipeline")
        with cuda_errors(f"copying images to {self.device}"):
            return normalise(pixels, spec, self.device, getattr(self, "dtype", torch.float32))

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[Image.Image], batch_size: int = 32, progress: bool = False, workers: int = 0
    ) -> np.ndarray:
        """L2-normalised float32 image embeddings ``(N, D)`` of decoded images (prepared in ``workers``
        processes; by default in this one, as the images are already in memory)."""
        if self.pipeline_spec() is None:
            chunks = []
            for batch in _batches(images, batch_size, progress, "encoding images"):
                chunks.append(self._encode_pixels(self.load_images(batch)))
            return _stack(chunks, self.dim)
        pipeline = ImagePipeline(self.pipeline_spec(), workers)
        encoded = self.encode_batches(pipeline.batches(images, batch_size), len(images), progress)
        if encoded.failed:
            raise ValueError(f"image {encoded.failed[0][0]} could not be prepared: {encoded.failed[0][1]}")
        return encoded.vectors

    @torch.no_grad()
    def encode_files(
        self,
        sources: Sequence[ImageSource],
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
        max_pixels: int = MAX_PIXELS,
        draft: bool = True,
    ) -> EncodedFiles:
        """Embeddings of image files (paths or bytes; decoded images work too), decoded and prepared in
        ``workers`` processes (``None``: all cores, ``0``: this process) while the model runs. Unreadable files
        are reported in :attr:`EncodedFiles.failed`, never raised."""
        spec = self.pipeline_spec()
        if spec is None:
            return self._encode_files_slowly(sources, batch_size, progress, max_pixels)
        pipeline = ImagePipeline(spec, self.default_workers(workers), max_pixels=max_pixels, draft=draft)
        return self.encode_batches(pipeline.batches(sources, batch_size), len(sources), progress)

    def default_workers(self, workers: int | None = None) -> int | None:
        """``workers`` if given, else the ``--threads`` count if one was set, else ``None`` (all cores)."""
        return self.__dict__.get("_workers") if workers is None else workers

    @torch.no_grad()
    def encode_batches(self, batches: Iterable[PixelBatch], total: int, progress: bool = False) -> EncodedFiles:
        """Run the model over prepared pixel batches (as :class:`ImagePipeline` yields them) of ``total`` sources."""
        chunks, indices, failed, sizes = [], [], [], []
        with tqdm(total=total, desc="encoding images", unit="img", disable=not progress) as bar:
            for batch in batches:
                if len(batch.indices):
                    chunks.append(self._encode_pixels(self.pixels_from_uint8(batch.pixels)))
                indices.extend(batch.indices)
                failed.extend(batch.failed)
                sizes.extend(batch.sizes)
                bar.update(len(batch.indices) + len(batch.failed))
        return EncodedFiles(_stack(chunks, self.dim), indices, failed, sizes)

    def _encode_files_slowly(
        self, sources: Sequence[ImageSource], batch_size: int, progress: bool, max_pixels: int
    ) -> EncodedFiles:
        images, indices, failed = [], [], []
        for index, source in enumerate(sources):
            try:
                image = source if isinstance(source, Image.Image) else decode_image(source, max_pixels=max_pixels)
            except (FileNotFoundError, ImageDecodeError) as exc:
                failed.append((index, str(exc) if isinstance(exc, ImageDecodeError) else "file not found"))
                continue
            images.append(image)
            indices.append(index)
        chunks = [self._encode_pixels(self.load_images(b)) for b in _batches(images, batch_size, progress, "encoding")]
        return EncodedFiles(_stack(chunks, self.dim), indices, failed, [image.size for image in images])

    def _encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        self.threads.apply()
        with cuda_errors(f"encoding images on {self.device}"):
            return _normalised_numpy(self.image_features(pixels))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 text embeddings ``(N, D)``."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not a single string")
        self.threads.apply()
        chunks = []
        for batch in _batches(texts, batch_size, progress, "encoding texts"):
            with cuda_errors(f"encoding texts on {self.device}"):
                chunks.append(_normalised_numpy(self.text_features(self.tokenize(list(batch)))))
        return _stack(chunks, self.dim)

    def placeholder_token_id(self, placeholder: str = PLACEHOLDER) -> int:
        """The vocabulary id of the pseudo-word placeholder; it must be a single token."""
        ids = self.tokenize([placeholder])["input_ids"][0].tolist()
        specials = set(self.special_token_ids())
        body = [i for i in ids if i not in specials]
        if len(body) != 1:
            raise ValueError(f"placeholder {placeholder!r} is not a single token for {self.info.model_id}")
        return body[0]

    def special_token_ids(self) -> list[int]:
        """Ids of special tokens (start, end, pad) that :meth:`tokenize` adds."""
        return []

    def text_features_with_pseudo_tokens(
        self, texts: Sequence[str], pseudo_tokens: torch.Tensor, placeholder: str = PLACEHOLDER
    ) -> torch.Tensor:
        """Encode prompts containing ``placeholder`` once each; row ``i`` of ``pseudo_tokens`` fills text ``i``.

        Differentiable in ``pseudo_tokens`` (``(B, E)``, E = token-embedding width). Unnormalised ``(B, D)``.
        """
        tokens = self.tokenize(list(texts))
        mask = tokens["input_ids"] == self.placeholder_token_id(placeholder)
        per_text = mask.sum(dim=1)
        if not bool((per_text == 1).all()):
            bad = [texts[i] for i in torch.nonzero(per_text != 1).flatten().tolist()][:3]
            raise ValueError(f"each prompt needs exactly one {placeholder!r}; got {bad}")
        return self.text_features(tokens, TokenOverrides(mask=mask, embeddings=pseudo_tokens))

    @contextlib.contextmanager
    def _override_token_inputs(self, overrides: TokenOverrides | None) -> Iterator[None]:
        """Within the block, the token-embedding table's output carries ``overrides`` at its masked positions."""
        if overrides is None:
            yield
            return

        def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            output[overrides.mask.to(output.device)] = overrides.embeddings.to(output.dtype)
            return output

        handle = self.token_embedding_table().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def _batches(items: Sequence, size: int, progress: bool, desc: str) -> Iterator[Sequence]:
    starts = range(0, len(items), max(1, size))
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        yield items[start : start + size]


def _stack_pixels(arrays: list[np.ndarray], spec: PixelSpec) -> np.ndarray:
    return np.stack(arrays) if arrays else np.zeros((0, *spec.crop, 3), dtype=np.uint8)


def _normalised_numpy(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32)


def _stack(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, dim), dtype=np.float32)
