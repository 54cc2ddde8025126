"""An encoder that loads its model on first use: commands with nothing to encode never pay for a model load.

:class:`LazyEncoder` knows its :class:`~clipmath.encoders.identity.EncoderInfo` and image transform from files on
disk (:func:`~clipmath.encoders.identity.peek_info`) where that is certain, so a store can be opened, checked and
found up to date without loading (or even importing) torch. Anything else it is asked for loads the model through
:func:`clipmath.encoders.load_encoder` and is answered by the real encoder. Where the identity cannot be known
without loading (``auto``, a fine-tuned folder with its own settings, a plug-in), asking for it loads the model.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clipmath.encoders.identity import EncoderInfo, peek_info
from clipmath.encoders.transforms import ImageTransform
from clipmath.errors import ModelLoadError

#: Prepared crops buffered while the model loads (uint8: about 150 kB each at 224 px).
PREFETCH_IMAGES = 512


class LazyEncoder:
    """Stands in for ``load_encoder(name, device=…, preprocessing=…, dtype=…)`` until the model is needed."""

    def __init__(
        self,
        name: str | None,
        device: str = "cpu",
        preprocessing: str | None = None,
        target_ratio: float = 1.25,
        dtype: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.name = name
        self.options = {"device": device, "preprocessing": preprocessing, "target_ratio": target_ratio, "dtype": dtype}
        self.threads_wanted = threads
        self.loads = 0
        self._encoder: Any = None
        self._lock = threading.Lock()
        peeked = peek_info(name)  # None for a folder with its own settings: then everything comes from the load
        self._info: EncoderInfo | None = peeked
        self._transform = ImageTransform(preprocessing or "clip", target_ratio) if peeked is not None else None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def info(self) -> EncoderInfo:
        return self._info if self._info is not None else self.load().info

    @property
    def transform(self) -> ImageTransform:
        return self._transform if self._transform is not None else self.load().transform

    @property
    def dim(self) -> int:
        return self.info.dim

    def load(self) -> Any:
        """The real encoder (loaded once, thread-safe)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load()
            return self._encoder

    def _load(self) -> Any:
        from clipmath.encoders import load_encoder

        self.loads += 1
        encoder = load_encoder(self.name, **_supported(load_encoder, self.options))
        if self._info is not None and self._transform is not None:
            got = (encoder.info.model_id, encoder.info.backend, encoder.info.dim, encoder.transform.key)
            announced = (self._info.model_id, self._info.backend, self._info.dim, self._transform.key)
            if got != announced:
                raise ModelLoadError(f"model {self.name!r} loaded as {got}, not as announced {announced} (a bug)")
        if self.threads_wanted:
            encoder.set_threads(self.threads_wanted)
        return encoder

    def encode_files(
        self,
        sources: Sequence[Any],
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
        max_pixels: int | None = None,
        draft: bool = True,
    ) -> Any:
        """:meth:`Encoder.encode_files`; on the first call the worker processes decode and prepare images while
        the model loads in a thread (up to :data:`PREFETCH_IMAGES` crops are buffered meanwhile)."""
        from clipmath.encoders.identity import peek_pixel_spec
        from clipmath.encoders.pipeline import ImagePipeline
        from clipmath.imageio import MAX_PIXELS

        max_pixels = max_pixels or MAX_PIXELS
        spec = None
        if not self.loaded and self._info is not None and self._transform is not None and len(sources):
            spec = peek_pixel_spec(self.name)
        if spec is None:
            return self.load().encode_files(sources, batch_size, workers, progress, max_pixels, draft)
        pad = self._transform.target_ratio if self._transform.mode == "targetpad" else None
        spec = spec.with_pad(pad)
        pipeline = ImagePipeline(spec, workers if workers is not None else self.threads_wanted, max_pixels, draft)
        pipeline.start()
        with ThreadPoolExecutor(1, thread_name_prefix="clipmath-model-load") as loader:
            loading = loader.submit(self.load)
            batches = pipeline.batches(sources, batch_size)
            buffered: list[Any] = []
            for batch in batches:
                buffered.append(batch)
                waiting = sum(len(b.indices) + len(b.failed) for b in buffered)
                if loading.done() or waiting >= PREFETCH_IMAGES:
                    break
            encoder = loading.result()
        if encoder.pipeline_spec() != spec:  # announced wrongly: prepare the images again, the model's way
            batches.close()
            return encoder.encode_files(sources, batch_size, workers, progress, max_pixels, draft)
        return encoder.encode_batches(itertools.chain(buffered, batches), len(sources), progress)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.load(), attribute)


def _supported(load: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``load`` accepts (an older ``load_encoder`` has ``fp16`` instead of ``dtype``)."""
    import inspect

    parameters = inspect.signature(load).parameters
    chosen = {k: v for k, v in options.items() if k in parameters and v is not None}
    if "dtype" not in parameters and options.get("dtype") in ("auto", "float16"):
        chosen["fp16"] = True
    return chosen
