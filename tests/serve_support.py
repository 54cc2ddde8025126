"""Shared set-up for the server tests: a small gallery of the repository's real example photos, indexed."""

from __future__ import annotations

import shutil
from pathlib import Path

from clipmath.encoders import Encoder
from clipmath.retrieval import Retriever
from clipmath.store import Gallery, index_folder
from tests.conftest import GALLERY as EXAMPLES

#: Indexed before the server starts.
FIRST = [
    "skimage/chelsea.png",
    "skimage/coffee.png",
    "skimage/astronaut.png",
    "skimage/rocket.jpg",
    "arithmetic/king2.jpg",
    "arithmetic/man2.jpg",
    "arithmetic/woman2.jpg",
    "ocr/stanford.jpg",
    "coco/COCO_val2014_000000060623.jpg",
    "coco/COCO_val2014_000000386164.jpg",
    "coco/COCO_val2014_000000008775.jpg",
    "coco/COCO_val2014_000000027440.jpg",
]
#: Added while the server is running (re-indexing test).
LATER = [
    "coco/COCO_val2014_000000033645.jpg",
    "coco/COCO_val2014_000000078707.jpg",
    "coco/COCO_val2014_000000097017.jpg",
    "coco/COCO_val2014_000000165547.jpg",
    "coco/COCO_val2014_000000182784.jpg",
    "coco/COCO_val2014_000000207151.jpg",
    "coco/COCO_val2014_000000210032.jpg",
    "coco/COCO_val2014_000000299319.jpg",
]


def copy_examples(names: list[str], root: Path) -> None:
    for name in names:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLES / name, target)


def build_store(base: Path, encoder: Encoder, names: list[str] = FIRST) -> tuple[Path, Path]:
    """Copy ``names`` into ``base/images`` and index them into ``base/store``; returns (store, image root)."""
    root = base / "images"
    copy_examples(names, root)
    store = base / "store"
    report = index_folder(store, root, encoder, progress=False)
    assert report.added == len(names) and not report.bad
    return store, root


def open_retriever(store: Path, encoder: Encoder) -> Retriever:
    return Retriever(Gallery.open(store), encoder)
