"""FashionIQ (Wu et al., CVPR 2021): fashion product images, each query a pair of relative captions.

Folder layout (the official release, as SEARLE and CLIP4Cir read it)::

    FashionIQ/
        captions/cap.{dress,shirt,toptee}.{train,val,test}.json     [{"target", "candidate", "captions": [c0, c1]}]
        image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   ["B00006M009", ...]
        images/B00006M009.jpg ...

One :class:`CIRDataset` per category (``load_fashioniq(root, "dress")``); the benchmark reports each category and
their average (:func:`clipmath.eval.fashioniq_average`). The gallery is the category's split image list, in file
order; the reference is *not* removed from the ranking (SEARLE and CLIP4Cir keep it).

Captions: each query has two relative captions written by different annotators. :func:`join_captions` joins them
as SEARLE's validation does: both stripped of surrounding ``.?, `` characters, then ``"{c0} and {c1}"``.
SEARLE also encodes the reversed order ``"{c1} and {c0}"`` and averages the two normalised text features; a compose
method that wants this finds the reversed string in ``extra["caption_reversed"]``. (CLIP4Cir additionally
capitalises the first caption; CLIP's tokenizer lower-cases, so that makes no difference for CLIP models.)

``extra``: ``category``, ``captions`` (the raw pair, unchanged), ``caption_reversed``.
"""

from __future__ import annotations

from pathlib import Path

from clipmath.data.base import (
    CIRDataset,
    CIRQuery,
    build_cir_dataset,
    expect_type,
    field_of,
    read_json,
    require_dir,
    require_file,
    unique_in_order,
)
from clipmath.errors import DatasetError

CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("val", "test", "train")
LAYOUT = (
    "FashionIQ/captions/cap.{dress,shirt,toptee}.{split}.json, "
    "FashionIQ/image_splits/split.{dress,shirt,toptee}.{split}.json, FashionIQ/images/<asin>.jpg"
)
_STRIP = ".?, "


def join_captions(first: str, second: str) -> str:
    """SEARLE's FashionIQ query text: ``"{first} and {second}"``, each stripped of surrounding ``.?,`` and spaces."""
    return f"{first.strip(_STRIP)} and {second.strip(_STRIP)}"


def load_fashioniq(root: str | Path, category: str, split: str = "val", check_images: bool = True) -> CIRDataset:
    """Load one FashionIQ category (``dress``, ``shirt``, ``toptee``) of ``split`` from the official layout.

    ``check_images``: stat every gallery image and raise :class:`DatasetError` if any is missing.
    """
    root = Path(root)
    if category not in CATEGORIES:
        raise DatasetError(f"unknown FashionIQ category '{category}': use one of {', '.join(CATEGORIES)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown FashionIQ split '{split}': use one of {', '.join(SPLITS)}")
    captions_path = require_file(root, f"captions/cap.{category}.{split}.json", "FashionIQ", LAYOUT)
    split_path = require_file(root, f"image_splits/split.{category}.{split}.json", "FashionIQ", LAYOUT)
    images_dir = require_dir(root, "images", "FashionIQ", LAYOUT)

    listing = expect_type(read_json(split_path), list, "the image list", split_path)
    gallery_ids = unique_in_order([str(x) for x in listing], split_path)
    entries = expect_type(read_json(captions_path), list, "the caption file", captions_path)

    queries = []
    for position, entry in enumerate(entries):
        reference = str(field_of(entry, "candidate", captions_path, position))
        captions = field_of(entry, "captions", captions_path, position)
        if not isinstance(captions, list) or len(captions) != 2 or not all(isinstance(c, str) for c in captions):
            raise DatasetError(f"{captions_path}: entry {position} should hold two relative captions")
        target = entry.get("target")
        queries.append(
            CIRQuery(
                query_id=f"{category}-{position}",
                reference_id=reference,
                caption=join_captions(captions[0], captions[1]),
                target_ids=(str(target),) if target is not None else (),
                subset_ids=None,
                extra={
                    "category": category,
                    "captions": tuple(captions),
                    "caption_reversed": join_captions(captions[1], captions[0]),
                },
            )
        )

    image_paths = {image_id: images_dir / f"{image_id}.jpg" for image_id in gallery_ids}
    return build_cir_dataset(
        benchmark="fashioniq", name=f"fashioniq-{category}", split=split, root=root, queries=queries,
        image_paths=image_paths, listing=split_path, exclude_reference=False, check_images=check_images,
    )  # fmt: skip


def load_fashioniq_all(root: str | Path, split: str = "val", check_images: bool = True) -> dict[str, CIRDataset]:
    """All three categories, keyed by category name (the order FashionIQ tables use: dress, shirt, toptee)."""
    return {category: load_fashioniq(root, category, split, check_images) for category in CATEGORIES}
