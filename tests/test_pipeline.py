"""The image pipeline: same pixels as transformers' CLIP processor, workers identical to in-process, draft mode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.encoders.efficientnet_lite import LITE_PIXELS, preprocess_lite
from clipmath.encoders.pipeline import ImagePipeline, clip_spec, decode_for_model, normalise, prepare_pixels
from clipmath.encoders.transforms import target_pad

GALLERY = Path(__file__).resolve().parent.parent / "examples" / "gallery"


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    found = sorted(GALLERY.glob("*/*.jpg")) + sorted(GALLERY.glob("*/*.png"))
    assert len(found) >= 10
    return found


def _odd_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (300, 200), dtype=np.uint8)),  # grayscale, portrait
        Image.fromarray(rng.integers(0, 255, (150, 151, 3), dtype=np.uint8)),  # smaller than the crop side
        Image.fromarray(rng.integers(0, 255, (100, 700, 3), dtype=np.uint8)),  # very wide
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)),  # exactly the input size
    ]


def _pil_clip_processor():
    """transformers' Pillow CLIP processor (transformers 5 picks a torchvision one when torchvision is installed;
    the pipeline reproduces the Pillow one, which is also what clipmath loads)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)()


def test_equals_transformers_clip_processor(photos):
    processor = _pil_clip_processor()  # openai/clip-vit-base-patch32's settings (224, bicubic, CLIP mean/std)
    spec = clip_spec(processor)
    assert spec is not None and spec.short_side == 224 and spec.crop == (224, 224)
    images = [Image.open(p) for p in photos[:12]] + _odd_images()
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = normalise(np.stack([prepare_pixels(img, spec) for img in images]), spec, "cpu", torch.float32)
    assert ours.shape == expected.shape
    assert float((ours - expected).abs().max()) < 1e-3


def test_targetpad_equals_padding_then_processor(photos):
    processor = _pil_clip_processor()
    spec = clip_spec(processor).with_pad(1.25)
    images = [Image.open(p).convert("RGB") for p in photos[:6]] + [_odd_images()[2].convert("RGB")]
    expected = processor(images=[target_pad(img, 1.25) for img in images], return_tensors="pt")["pixel_values"]
    ours = normalise(np.stack([prepare_pixels(img, spec) for img in images]), spec, "cpu", torch.float32)
    assert float((ours - expected).abs().max()) < 1e-3


def test_equals_efficientnet_lite_reference(photos):
    images = [Image.open(p) for p in photos[:6]] + _odd_images()
    ours = normalise(np.stack([prepare_pixels(img, LITE_PIXELS) for img in images]), LITE_PIXELS, "cpu", torch.float32)
    assert float((ours - preprocess_lite(images)).abs().max()) < 1e-3


def test_workers_equal_in_process_bit_for_bit(photos, tmp_path):
    spec = clip_spec(__import__("transformers").CLIPImageProcessor())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    sources = [*photos[:9], broken, tmp_path / "missing.jpg", photos[9].read_bytes(), *photos[10:13]]
    single = list(ImagePipeline(spec, workers=0).batches(sources, batch_size=4))
    parallel = list(ImagePipeline(spec, workers=2, task_size=3).batches(sources, batch_size=4))
    assert [b.indices for b in single] == [b.indices for b in parallel]
    assert [b.sizes for b in single] == [b.sizes for b in parallel]
    assert parallel[0].sizes[0] == Image.open(photos[0]).size  # the stored image's size, not the draft's
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(single, parallel))
    failed = [f for b in parallel for f in b.failed]
    assert [index for index, _ in failed] == [9, 10]
    assert "not an image" in failed[0][1] and "not found" in failed[1][1]
    assert sorted(i for b in parallel for i in b.indices) == [i for i in range(len(sources)) if i not in (9, 10)]


def test_encode_files_with_workers_equals_in_process(tiny_encoder, photos):
    single = tiny_encoder.encode_files(photos[:10], batch_size=4, workers=0)
    parallel = tiny_encoder.encode_files(photos[:10], batch_size=4, workers=2)
    assert np.array_equal(single.vectors, parallel.vectors) and single.indices == parallel.indices == list(range(10))
    decoded = tiny_encoder.encode_images([Image.open(p) for p in photos[:4]], batch_size=4)
    undrafted = tiny_encoder.encode_files(photos[:4], batch_size=4, workers=0, draft=False)
    assert np.allclose(decoded, undrafted.vectors, atol=1e-5)  # 32-px model: the files above were drafted


def _big_jpeg(photo: Path, scale: int) -> bytes:
    image = Image.open(photo).convert("RGB")
    big = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def test_draft_mode_decodes_large_jpegs_smaller_and_close(photos):
    spec = clip_spec(__import__("transformers").CLIPImageProcessor())
    data = _big_jpeg(photos[0], 6)  # e.g. 3840x2880 for a 224 input
    full = decode_for_model(data, spec, 10**9, draft=False)
    drafted = decode_for_model(data, spec, 10**9, draft=True)
    assert drafted.width < full.width / 3 and min(drafted.size) >= 2 * spec.short_side
    a = normalise(prepare_pixels(full, spec)[None], spec, "cpu", torch.float32)
    b = normalise(prepare_pixels(drafted, spec)[None], spec, "cpu", torch.float32)
    assert float((a - b).abs().mean()) < 0.03  # normalised units (pixel range ~4): a small resampling difference
    small = Image.open(photos[0])
    assert decode_for_model(photos[0], spec, 10**9, draft=True).size == small.size  # small photos: untouched


def test_pixel_limit_and_exif_orientation(tmp_path, photos):
    spec = clip_spec(__import__("transformers").CLIPImageProcessor())
    from clipmath.imageio import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_for_model(photos[0], spec, max_pixels=1000, draft=True)
    image = Image.open(photos[0]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated = tmp_path / "rotated.jpg"
    image.save(rotated, exif=exif.tobytes())
    assert decode_for_model(rotated, spec, 10**9, draft=False).size == (image.height, image.width)


def test_threads_setting_sizes_the_worker_pool(monkeypatch, photos):
    from clipmath.encoders import base
    from clipmath.encoders.hf_clip import HFClipEncoder
    from clipmath.encoders.tiny import tiny_clip_folder

    encoder = HFClipEncoder.load(str(tiny_clip_folder()))
    seen = []
    real = base.ImagePipeline

    def spy(spec, workers=None, **kwargs):
        seen.append(workers)
        return real(spec, workers, **kwargs)

    monkeypatch.setattr(base, "ImagePipeline", spy)
    before = torch.get_num_threads()
    try:
        encoder.encode_files(photos[:2])
        encoder.set_threads(1)
        encoder.encode_files(photos[:2])
        encoder.encode_files(photos[:2], workers=0)
    finally:
        torch.set_num_threads(before)
    assert seen == [None, 1, 0]  # None: all cores; --threads N: N workers; an explicit count wins


def _die(*_args):
    import os

    os._exit(1)


def test_a_dead_worker_is_a_one_line_error_and_the_next_run_works(photos, monkeypatch):
    from clipmath.encoders import pipeline
    from clipmath.errors import ClipmathError

    spec = pipeline.LITE_PIXELS
    monkeypatch.setattr(pipeline, "_load_task", _die)
    with pytest.raises(ClipmathError, match="worker process died"):
        list(ImagePipeline(spec, workers=2, task_size=2).batches(photos[:6], 4))
    monkeypatch.undo()
    batches = list(ImagePipeline(spec, workers=2, task_size=2).batches(photos[:6], 4))
    assert sum(len(b.indices) for b in batches) == 6


def test_workers_do_not_keep_a_lock_the_caller_held_when_they_started(tmp_path, photos):
    import fcntl
    import os

    from clipmath.encoders import pipeline

    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a store being written holds its lock
    pipeline.shutdown_pools()  # the next pipeline forks its workers now, while the lock is held
    list(ImagePipeline(pipeline.LITE_PIXELS, workers=2, task_size=2).batches(photos[:4], 2))
    os.close(fd)  # released here: no worker may still hold it
    again = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(again)


def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path):
    """``kill -9`` of an indexer must not leave its image workers behind (they hold both ends of their task pipe)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys, time\n"
        "from concurrent.futures import wait\n"
        "from clipmath.encoders.pipeline import _pool\n"
        "pool = _pool(2)\n"
        "wait([pool.submit(os.getpid) for _ in range(8)])\n"
        "print(' '.join(str(pid) for pid in pool._processes), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [pid for pid in workers if alive(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, "image workers outlived the killed process"
