"""Shared fixtures. Tests never reach the network: the hub is forced offline so a bad name fails fast."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
GALLERY = EXAMPLES / "gallery"


@pytest.fixture(scope="session")
def tiny_encoder():
    from clipmath.encoders import load_encoder

    return load_encoder("tiny-random-clip")


@pytest.fixture(scope="session")
def offline_encoder():
    from clipmath.encoders import load_encoder

    return load_encoder("offline-imagenet-minilm")


def write_images(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (48, 40)) -> list[str]:
    """Write ``count`` distinct small images (PNG and JPEG mixed) and return their relative names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        name = f"img_{i:04d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    return names


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_images(folder, 12)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Small-batch CPU training is dominated by per-operation overhead, which extra threads only add to (and on a
    busy machine multiply): training tests run single-threaded (``pytestmark = usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
