"""The image pipeline: decode, resize, crop in worker processes, normalise as one batched tensor operation.

A model's preprocessing is described by a :class:`PixelSpec` (short-side resize, centre crop, mean/std, optional
``targetpad``). :func:`prepare_pixels` turns one image into a ``(H, W, 3)`` uint8 crop with Pillow and NumPy; the
result equals transformers' ``CLIPImageProcessor`` (and EfficientNet-Lite's resize/crop) to within 1e-3 after
:func:`normalise`, which runs on the model's device (so a GPU receives uint8, a quarter of the bytes).

:class:`ImagePipeline` runs :func:`load_pixels` (decode + prepare) over files in worker processes, a bounded number
of small tasks ahead of the consumer, and yields batches in input order while the caller runs the model on the
previous one. Each worker holds one decoded photo at a time; only crops travel back. ``workers=0`` runs the same
code in the calling process (the results are identical bit for bit). JPEGs much larger than the model input are
decoded in draft mode (the JPEG decoder's DCT downscaling, 1/2 to 1/8) to at least twice the resolution the
resize needs. Decoding is :mod:`clipmath.imageio`'s (pixel limit, formats, EXIF orientation).
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clipmath.errors import ClipmathError
from clipmath.imageio import MAX_PIXELS, DecodedImage, ImageDecodeError, decode

#: An image to encode: a file path, the file's bytes, or a decoded PIL image.
ImageSource = str | Path | bytes | Image.Image

#: Images per worker task: big enough to amortise inter-process overhead, small enough to keep workers busy.
TASK_SIZE = 8
#: How much lower the workers' scheduling priority is than the process running the model.
WORKER_NICENESS = 5
#: Draft decoding keeps at least this many times the pixels the resize needs.
DRAFT_MARGIN = 2.0


@dataclass(frozen=True)
class PixelSpec:
    """How a model wants its pixels. ``rounding`` of the long side after the short-side resize: ``floor``
    (transformers, torchvision) or ``round`` (EfficientNet-Lite's reference code). ``squash``: resize straight to
    ``crop`` (aspect ratio not kept, nothing cropped: SigLIP). ``crop_offset`` of the centre crop: ``floor``
    (transformers) or ``round`` (torchvision's ``CenterCrop``, open_clip). ``pad_ratio``: pad to a square first
    when the aspect ratio is at least this (``targetpad``)."""

    short_side: int
    crop: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rounding: str = "floor"
    resample: int = int(Image.Resampling.BICUBIC)
    pad_ratio: float | None = None
    rescale: float = 1 / 255
    squash: bool = False
    crop_offset: str = "floor"

    def with_pad(self, pad_ratio: float | None) -> PixelSpec:
        return dataclasses.replace(self, pad_ratio=pad_ratio)


#: EfficientNet-Lite0's reference preprocessing: short side to 256 (bicubic, rounded), centre crop 224, [-1, 1].
LITE_PIXELS = PixelSpec(256, (224, 224), (0.5,) * 3, (0.5,) * 3, rounding="round")
#: transformers' CLIPImageProcessor defaults, for a preprocessor_config.json that leaves settings out.
_CLIP_DEFAULTS = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}


def clip_spec_from_file(path: Path) -> PixelSpec | None:
    """:func:`clip_spec` of a saved ``preprocessor_config.json``, without transformers (``None``: not a plain
    CLIP image processor)."""
    import json
    from types import SimpleNamespace

    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "CLIPImageProcessor" not in str(config.get("image_processor_type", "")):
        return None
    size, crop = config.get("size"), config.get("crop_size")
    if isinstance(size, int):
        config["size"] = {"shortest_edge": size}
    if isinstance(crop, int):
        config["crop_size"] = {"height": crop, "width": crop}
    return clip_spec(SimpleNamespace(**{**_CLIP_DEFAULTS, **config}))


def clip_spec(processor) -> PixelSpec | None:
    """The :class:`PixelSpec` of a transformers image processor (CLIP's short-side resize + centre crop, or
    SigLIP's / ChineseCLIP's resize to a fixed size), or ``None`` if it does something else."""
    size = dict(getattr(processor, "size", None) or {})
    crop = dict(getattr(processor, "crop_size", None) or {})
    center_crop = bool(getattr(processor, "do_center_crop", False))
    plain = (
        getattr(processor, "do_resize", True)
        and getattr(processor, "do_rescale", True)
        and getattr(processor, "do_normalize", True)
        and getattr(processor, "do_convert_rgb", True) is not False
        and not getattr(processor, "do_pad", False)
    )
    if plain and center_crop and set(size) == {"shortest_edge"} and crop.get("height") and crop.get("width"):
        short, box, squash = int(size["shortest_edge"]), (int(crop["height"]), int(crop["width"])), False
    elif plain and not center_crop and set(size) == {"height", "width"}:
        box = (int(size["height"]), int(size["width"]))
        short, squash = max(box), True
    else:
        return None
    return PixelSpec(
        short_side=short,
        crop=box,
        mean=tuple(float(m) for m in processor.image_mean),
        std=tuple(float(s) for s in processor.image_std),
        resample=int(getattr(processor, "resample", Image.Resampling.BICUBIC)),
        rescale=float(getattr(processor, "rescale_factor", 1 / 255)),
        squash=squash,
    )


def describe_pixels(spec: PixelSpec) -> str:
    """A short description of an image preparation, for a model's description line."""
    height, width = spec.crop
    how = (
        f"squash to {width}x{height}" if spec.squash else f"short side {spec.short_side}, centre crop {width}x{height}"
    )
    resample = Image.Resampling(spec.resample).name.lower()
    return (
        f"{how} ({resample}), mean {tuple(round(m, 4) for m in spec.mean)} std {tuple(round(s, 4) for s in spec.std)}"
    )


# ---- one image -----------------------------------------------------------------------------------------------
def _pad_square(image: Image.Image, ratio: float | None) -> Image.Image:
    width, height = image.size
    if ratio is None or min(width, height) == 0 or max(width, height) / min(width, height) < ratio:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _resized_size(width: int, height: int, spec: PixelSpec) -> tuple[int, int]:
    if spec.squash:
        return spec.crop[1], spec.crop[0]
    short, long = min(width, height), max(width, height)
    if spec.rounding == "round":
        scale = spec.short_side / short
        new_short, new_long = round(short * scale), round(long * scale)
    else:
        new_short, new_long = spec.short_side, int(spec.short_side * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _centre_crop(array: np.ndarray, crop: tuple[int, int], offset: str = "floor") -> np.ndarray:
    """transformers' (``offset="floor"``) or torchvision's (``"round"``) centre crop on ``(H, W, 3)``, zero-padding
    (centred) an image smaller than the crop."""
    height, width = array.shape[:2]
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        new_h, new_w = max(crop_h, height), max(crop_w, width)
        padded = np.zeros((new_h, new_w, array.shape[2]), dtype=array.dtype)
        top, left = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
        padded[top : top + height, left : left + width] = array
        array, height, width = padded, new_h, new_w
    if offset == "round":
        top, left = round((height - crop_h) / 2.0), round((width - crop_w) / 2.0)
    else:
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return array[top : top + crop_h, left : left + crop_w]


def prepare_pixels(image: Image.Image, spec: PixelSpec) -> np.ndarray:
    """RGB, pad, resize and centre-crop one image: ``(H, W, 3)`` uint8, C-contiguous."""
    image = _pad_square(image if image.mode == "RGB" else image.convert("RGB"), spec.pad_ratio)
    size = _resized_size(*image.size, spec)
    resized = image.resize(size, resample=spec.resample)
    return np.array(_centre_crop(np.asarray(resized), spec.crop, spec.crop_offset), dtype=np.uint8, order="C")


def decode_for_model(source: str | Path | bytes, spec: PixelSpec, max_pixels: int, draft: bool) -> Image.Image:
    """Decode a file (or its bytes) with :mod:`clipmath.imageio`, in JPEG draft mode reduced no further than
    :data:`DRAFT_MARGIN` times the short side the resize needs. Raises as :func:`clipmath.imageio.decode`."""
    return _decode(source, spec, max_pixels, draft).image


def _decode(source: str | Path | bytes, spec: PixelSpec, max_pixels: int, draft: bool) -> DecodedImage:
    side = math.ceil(spec.short_side * DRAFT_MARGIN)
    return decode(source, max_pixels=max_pixels, draft=(side, side) if draft else None)


def load_pixels(source: ImageSource, spec: PixelSpec, max_pixels: int = MAX_PIXELS, draft: bool = True):
    """Decode (unless already an image) and prepare one source: ``((H, W, 3) uint8 crop, (width, height) of the
    image as stored, EXIF orientation applied)``, or the reason it failed (an :class:`ImageDecodeError`)."""
    try:
        if isinstance(source, Image.Image):
            return prepare_pixels(source, spec), source.size
        decoded = _decode(source, spec, max_pixels, draft)
        return prepare_pixels(decoded.image, spec), (decoded.width, decoded.height)
    except FileNotFoundError:
        return ImageDecodeError("file not found")
    except ImageDecodeError as exc:
        return exc


def _load_task(sources: Sequence[ImageSource], spec: PixelSpec, max_pixels: int, draft: bool) -> list:
    return [load_pixels(source, spec, max_pixels, draft) for source in sources]


# ---- many images ---------------------------------------------------------------------------------------------
@dataclass
class PixelBatch:
    """Prepared crops ``(n, H, W, 3)`` uint8 of the sources at ``indices`` and their images' ``(width, height)``;
    ``failed`` holds ``(index, reason)``."""

    pixels: np.ndarray
    indices: list[int]
    failed: list[tuple[int, str]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)


_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers``, shared for the life of this process (started on first use)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_worker_init)
        return pool


def _context() -> multiprocessing.context.BaseContext:
    """Fork where there is fork (fast, and a caller's script is not imported again), spawn elsewhere."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _worker_init() -> None:
    """Close the files a forked worker inherited (a store's write lock would otherwise stay held for as long as
    the worker lives; pipes and sockets, the worker's own channels, stay) and lower its priority."""
    import stat

    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - no /proc: spawned workers inherit nothing anyway
        descriptors = []
    for fd in descriptors:
        if fd < 3:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            os.close(fd)
    _lower_priority()
    _exit_with_parent()


def _exit_with_parent(poll_seconds: float = 1.0) -> None:
    """End this worker when the process that started it is gone: a forked worker keeps both ends of its task pipe,
    so a parent killed with ``kill -9`` would otherwise leave it waiting for work for ever."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="clipmath-parent-watch", daemon=True).start()


def _lower_priority() -> None:
    """Workers yield the CPU to the model's threads: decoding fills the gaps instead of stalling every
    synchronised torch thread it preempts."""
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # pragma: no cover - not allowed here: run at the same priority
        pass


def _forget_pool(workers: int) -> None:
    with _POOLS_LOCK:
        pool = _POOLS.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown_pools() -> None:
    """Stop the shared worker processes (also run at exit)."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.shutdown(wait=True, cancel_futures=True)
        _POOLS.clear()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """``None`` → all cores; ``0`` → in the calling process."""
    if workers is None:
        return available_cores()
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    return int(workers)


class ImagePipeline:
    """Prepared pixel batches of many images, decoded in ``workers`` processes (``0``: in this process)."""

    def __init__(
        self,
        spec: PixelSpec,
        workers: int | None = None,
        max_pixels: int = MAX_PIXELS,
        draft: bool = True,
        task_size: int = TASK_SIZE,
    ) -> None:
        self.spec = spec
        self.workers = resolve_workers(workers)
        self.max_pixels = max_pixels
        self.draft = draft
        self.task_size = max(1, task_size)

    def start(self) -> None:
        """Start the worker processes now (before any thread is started: forking is only safe then)."""
        if self.workers:
            _pool(self.workers).submit(int).result()

    def batches(self, sources: Sequence[ImageSource], batch_size: int) -> Iterator[PixelBatch]:
        """Batches of up to ``batch_size`` sources, in order; failures are reported, not raised."""
        batch_size = max(1, batch_size)
        if self.workers == 0 or len(sources) <= self.task_size:
            for start in range(0, len(sources), batch_size):
                chunk = sources[start : start + batch_size]
                yield _assemble(start, _load_task(chunk, self.spec, self.max_pixels, self.draft), self.spec)
            return
        yield from self._parallel(sources, batch_size)

    def _parallel(self, sources: Sequence[ImageSource], batch_size: int) -> Iterator[PixelBatch]:
        task = min(self.task_size, max(1, math.ceil(batch_size / self.workers)))
        ahead = max(2 * self.workers, 2 * math.ceil(batch_size / task))  # tasks in flight: bounded memory
        pool = _pool(self.workers)
        pending: deque[tuple[int, Future]] = deque()
        next_start = 0

        def submit_more() -> None:
            nonlocal next_start
            while len(pending) < ahead and next_start < len(sources):
                chunk = list(sources[next_start : next_start + task])
                pending.append((next_start, pool.submit(_load_task, chunk, self.spec, self.max_pixels, self.draft)))
                next_start += len(chunk)

        results: list = []
        batch_start = 0
        try:
            submit_more()
            while pending:
                _, future = pending.popleft()
                try:
                    results.extend(future.result())
                except BrokenProcessPool:
                    _forget_pool(self.workers)
                    raise ClipmathError(
                        "an image worker process died (out of memory, or a decoder crashed on a file); "
                        "run again, or with workers=0 to find the file"
                    ) from None
                submit_more()
                while len(results) >= batch_size or (results and not pending):
                    taken, results = results[:batch_size], results[batch_size:]
                    yield _assemble(batch_start, taken, self.spec)
                    batch_start += len(taken)
        finally:
            for _, future in pending:
                future.cancel()


def _assemble(start: int, results: list, spec: PixelSpec) -> PixelBatch:
    arrays, indices, sizes, failed = [], [], [], []
    for offset, result in enumerate(results):
        if isinstance(result, tuple):
            arrays.append(result[0])
            sizes.append(result[1])
            indices.append(start + offset)
        else:
            failed.append((start + offset, str(result)))
    height, width = spec.crop
    pixels = np.stack(arrays) if arrays else np.zeros((0, height, width, 3), dtype=np.uint8)
    return PixelBatch(pixels, indices, failed, sizes)


def normalise(pixels: np.ndarray, spec: PixelSpec, device, dtype):
    """uint8 ``(B, H, W, 3)`` → normalised ``(B, 3, H, W)`` in ``dtype`` on ``device`` (copied as uint8)."""
    import torch

    from clipmath.encoders.runtime import to_device

    batch = to_device(torch.from_numpy(pixels), torch.device(device))
    mean = torch.tensor(spec.mean, device=batch.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=batch.device, dtype=torch.float32).view(1, -1, 1, 1)
    floats = batch.permute(0, 3, 1, 2).to(torch.float32) * spec.rescale
    return ((floats - mean) / std).to(dtype).contiguous()
