"""Precision (dtype), per-thread CPU threads and one-line CUDA errors of the encoders."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.encoders.hf_clip import HFClipEncoder
from clipmath.encoders.precision import autocast_dtype, dtype_name, inference_dtype
from clipmath.encoders.runtime import ThreadBudget, cuda_errors
from clipmath.encoders.tiny import tiny_clip_folder
from clipmath.errors import ModelLoadError


def test_dtype_names_and_rules():
    assert dtype_name(None) == "auto" and dtype_name("bf16") == "bfloat16" and dtype_name(torch.float16) == "float16"
    assert inference_dtype("auto", "cpu") == torch.float32
    assert inference_dtype("auto", "cuda") == torch.float16  # only a name: nothing is allocated
    assert inference_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ModelLoadError, match="float16 is not supported on the CPU"):
        inference_dtype("float16", "cpu")
    with pytest.raises(ModelLoadError, match="unknown dtype 'double'"):
        inference_dtype("double", "cpu")
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("float32", "cuda") is None
    assert autocast_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ModelLoadError):
        autocast_dtype("float16", "cpu")


def _photos() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(4)]


def test_bfloat16_on_cpu_is_close_to_float32():
    folder = str(tiny_clip_folder())
    full = HFClipEncoder.load(folder, dtype="float32")
    half = HFClipEncoder.load(folder, dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16 and half.dtype == torch.bfloat16
    images, texts = _photos(), ["a red car", "two dogs on a beach"]
    a, b = full.encode_images(images), half.encode_images(images)
    assert a.dtype == b.dtype == np.float32
    assert (a * b).sum(axis=1).min() > 0.98  # cosine of the same image in both precisions
    assert (full.encode_texts(texts) * half.encode_texts(texts)).sum(axis=1).min() > 0.98
    assert not np.array_equal(a, b)  # it really ran in another precision


def test_fp16_flag_is_still_accepted_and_float16_on_cpu_is_refused_before_loading():
    folder = str(tiny_clip_folder())
    assert HFClipEncoder.load(folder, fp16=True).dtype == torch.float32  # fp16 meant "half on CUDA only"
    with pytest.raises(ModelLoadError, match="bfloat16"):
        HFClipEncoder.load(folder, dtype="float16")


def test_offline_encoder_in_bfloat16(offline_encoder):
    from clipmath.encoders.offline import OfflineImageNetMiniLM

    half = OfflineImageNetMiniLM.load(dtype="bfloat16")
    images = _photos()[:2]
    cosine = (half.encode_images(images) * offline_encoder.encode_images(images)).sum(axis=1)
    assert cosine.min() > 0.95
    texts = ["a photo of a cat", "a red sports car"]
    assert (half.encode_texts(texts) * offline_encoder.encode_texts(texts)).sum(axis=1).min() > 0.98


def test_thread_budget_applies_in_every_calling_thread():
    before = torch.get_num_threads()
    try:
        budget = ThreadBudget(1)
        seen = []

        def worker():
            torch.set_num_threads(2)  # what a fresh thread may start with
            budget.apply()
            seen.append(torch.get_num_threads())

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == [1] and torch.get_num_threads() == 1
        with pytest.raises(ModelLoadError):
            ThreadBudget(0)
    finally:
        torch.set_num_threads(before)


def test_encoder_sets_its_threads_in_a_server_worker_thread(tiny_encoder):
    before = torch.get_num_threads()
    try:
        tiny_encoder.set_threads(1)
        seen = []

        def worker():
            torch.set_num_threads(2)
            tiny_encoder.encode_texts(["a cat"])
            seen.append(torch.get_num_threads())

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == [1]
    finally:
        tiny_encoder.set_threads(before)
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of GPU memory"),
        (RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu"), "wrong device"),
        (AssertionError("Torch not compiled with CUDA enabled"), "no usable CUDA GPU"),
        (RuntimeError("CUDA error: invalid device ordinal"), "does not exist"),
    ],
)
def test_cuda_failures_become_one_line_errors(error, expected):
    with pytest.raises(ModelLoadError, match=expected) as caught:
        with cuda_errors("encoding images on cuda:0"):
            raise error
    assert "\n" not in str(caught.value) and "encoding images" in str(caught.value)


def test_other_errors_pass_through_cuda_errors():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with cuda_errors("encoding"):
            raise RuntimeError("shape mismatch")
