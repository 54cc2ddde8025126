"""Build official benchmark folder layouts in a temporary directory for tests.

The annotation files are the real samples in ``tests/data/cir-annotations`` (copied unchanged); the images do not
ship, so each builder writes a tiny distinct noise image under every name the annotations list, in the format and
folder the official release uses.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ANNOTATIONS = Path(__file__).parent / "data" / "cir-annotations"
CIRCO_OFFICIAL = Path(__file__).parent / "data" / "circo-official"
#: Extra COCO ids written into the CIRCO gallery so it holds more than 50 images beyond the annotated ones.
CIRCO_DISTRACTORS = tuple(range(900_000, 900_060))


def write_image(path: Path, name: str, size: int = 16) -> None:
    """A deterministic noise image for ``name`` (distinct names give distinct images)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"compress_level": 0} if path.suffix == ".png" else {}
    Image.fromarray(pixels).save(path, **options)


def build_fashioniq(root: Path) -> Path:
    """FashionIQ/{captions,image_splits,images} with an image for every id of the val image lists."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("captions", "image_splits"):
        shutil.copytree(ANNOTATIONS / "fashioniq" / folder, root / folder)
    for listing in sorted((root / "image_splits").glob("split.*.json")):
        for name in json.loads(listing.read_text()):
            write_image(root / "images" / f"{name}.jpg", name)
    return root


def build_cirr(root: Path) -> Path:
    """CIRR/cirr/{captions,image_splits} plus CIRR/{dev,test1}/<name>.png at the paths the split files give."""
    (root / "cirr").mkdir(parents=True, exist_ok=True)
    for folder in ("captions", "image_splits"):
        shutil.copytree(ANNOTATIONS / "cirr" / folder, root / "cirr" / folder)
    for listing in sorted((root / "cirr" / "image_splits").glob("split.rc2.*.json")):
        for name, relative in json.loads(listing.read_text()).items():
            write_image(root / relative, name)
    return root


def circo_image_ids(annotation_dir: Path) -> list[int]:
    """Every COCO id an annotation folder mentions (references and ground truths), sorted."""
    ids: set[int] = set()
    for path in annotation_dir.glob("*.json"):
        for query in json.loads(path.read_text()):
            ids.add(query["reference_img_id"])
            ids.update(query.get("gt_img_ids", []))
    return sorted(ids)


def write_coco_unlabeled(root: Path, image_ids: list[int], with_images: bool = True) -> None:
    """COCO2017_unlabeled/annotations/image_info_unlabeled2017.json (COCO schema) and the listed images."""
    images = [
        {
            "license": 1,
            "file_name": f"{i:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/unlabeled2017/{i:012d}.jpg",
            "height": 16,
            "width": 16,
            "date_captured": "2013-11-14 11:18:45",
            "id": i,
        }
        for i in image_ids
    ]
    info = {
        "info": {"description": "test fixture in COCO 2017 unlabeled format"},
        "licenses": [],
        "images": images,
        "categories": [],
    }
    path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    (root / "COCO2017_unlabeled" / "unlabeled2017").mkdir(parents=True, exist_ok=True)
    if with_images:
        for i in image_ids:
            write_image(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg", str(i))


def build_circo(root: Path) -> Path:
    """CIRCO/annotations plus a COCO-unlabeled gallery of the annotated ids and :data:`CIRCO_DISTRACTORS`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ANNOTATIONS / "circo" / "annotations", root / "annotations")
    write_coco_unlabeled(root, circo_image_ids(root / "annotations") + list(CIRCO_DISTRACTORS))
    return root


def build_simat(root: Path, with_images: bool = True) -> Path:
    """SIMAT/simat_db/{transfos,triplets}.csv, captions.txt and simat_db/images/images/<region_id>.png."""
    db = root / "simat_db"
    db.mkdir(parents=True, exist_ok=True)
    for name in ("transfos.csv", "triplets.csv", "captions.txt"):
        shutil.copy(ANNOTATIONS / "simat" / "simat_db" / name, db / name)
    images = db / "images" / "images"
    images.mkdir(parents=True, exist_ok=True)
    if with_images:
        for line in (db / "triplets.csv").read_text().splitlines()[1:]:
            region = line.split(",", 1)[0]
            write_image(images / f"{region}.png", region, size=8)
    return root


def pixel_features(paths: list[Path]) -> np.ndarray:
    """A model-free stand-in for an image encoder: each image's pixels, flattened and L2-normalised.

    The generated images are distinct noise, so an image's vector is closest to itself and nothing else; that
    makes "query with the target image" rankings predictable and checks that ids, paths and files line up.
    """
    vectors = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).ravel() - 127.5 for p in paths])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
