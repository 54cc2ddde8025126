"""CIRCO (Baldrati et al., ICCV 2023): open-domain composed retrieval over COCO 2017 unlabeled, several targets each.

Folder layout (the official release)::

    CIRCO/
        annotations/{val,test}.json
        COCO2017_unlabeled/annotations/image_info_unlabeled2017.json    (COCO's image list: {"images": [...]})
        COCO2017_unlabeled/unlabeled2017/000000243611.jpg ...

The gallery is every image of ``image_info_unlabeled2017.json`` (about 123k), in file order; ids are the COCO
integer ids as strings, and each image's file is its ``file_name`` under ``unlabeled2017/``.

Query fields: ``query_id`` is the annotation ``id`` as a string (the submission key); ``target_ids`` holds
``gt_img_ids`` in file order, whose first element is the annotated ``target_img_id`` (val only; test has none).
``extra``: ``shared_concept``, and on val ``target_img_id`` (CIRCO's Recall@K counts only this one) and
``semantic_aspects``.

Reference exclusion: the reference image is removed from each ranking. CIRCO's evaluation does not require it and
SEARLE's scripts keep it, but no reference is ever among its query's ground truths (checked on the released val
file), so removing it can only move true positives up: it never lowers a score, and it keeps the reference out of
test submissions.
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
)
from clipmath.errors import DatasetError

SPLITS = ("val", "test")
IMAGE_INFO = "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
IMAGE_DIR = "COCO2017_unlabeled/unlabeled2017"
LAYOUT = f"CIRCO/annotations/{{val,test}}.json, CIRCO/{IMAGE_INFO}, CIRCO/{IMAGE_DIR}/<12-digit id>.jpg"


def load_circo(root: str | Path, split: str = "val", check_images: bool = True) -> CIRDataset:
    """Load CIRCO ``val`` or ``test`` from the official layout.

    ``check_images``: stat every gallery image (about 123k files for the full set) and raise
    :class:`DatasetError` if any is missing.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DatasetError(f"unknown CIRCO split '{split}': use val or test")
    annotations_path = require_file(root, f"annotations/{split}.json", "CIRCO", LAYOUT)
    info_path = require_file(root, IMAGE_INFO, "CIRCO", LAYOUT)
    images_dir = require_dir(root, IMAGE_DIR, "CIRCO", LAYOUT)

    info = expect_type(read_json(info_path), dict, "the image information", info_path)
    images = expect_type(field_of(info, "images", info_path, 0), list, "'images'", info_path)
    image_paths: dict[str, Path] = {}
    for position, image in enumerate(images):
        image_id = str(field_of(image, "id", info_path, position))
        image_paths.setdefault(image_id, images_dir / str(field_of(image, "file_name", info_path, position)))
    if not image_paths:
        raise DatasetError(f"{info_path} lists no images")

    entries = expect_type(read_json(annotations_path), list, "the annotation file", annotations_path)
    queries = []
    seen_ids: set[str] = set()
    for position, entry in enumerate(entries):
        query_id = str(field_of(entry, "id", annotations_path, position))
        if query_id in seen_ids:
            raise DatasetError(f"{annotations_path}: query id {query_id} appears twice")
        seen_ids.add(query_id)
        extra: dict = {"shared_concept": entry.get("shared_concept")}
        gt_ids = entry.get("gt_img_ids")
        if gt_ids is not None:
            if not isinstance(gt_ids, list) or not gt_ids:
                raise DatasetError(f"{annotations_path}: entry {position} gt_img_ids should be a non-empty list")
            extra["target_img_id"] = str(entry.get("target_img_id", gt_ids[0]))
            extra["semantic_aspects"] = tuple(entry.get("semantic_aspects") or ())
        queries.append(
            CIRQuery(
                query_id=query_id,
                reference_id=str(field_of(entry, "reference_img_id", annotations_path, position)),
                caption=str(field_of(entry, "relative_caption", annotations_path, position)),
                target_ids=tuple(str(x) for x in gt_ids) if gt_ids is not None else (),
                subset_ids=None,
                extra=extra,
            )
        )

    return build_cir_dataset(
        benchmark="circo", name="circo", split=split, root=root, queries=queries, image_paths=image_paths,
        listing=info_path, exclude_reference=True, check_images=check_images, target_role="ground-truth",
    )  # fmt: skip
