"""CIRR (Liu et al., ICCV 2021): composed retrieval on real-life NLVR2 images, with per-query image subsets.

Folder layout (the official release as SEARLE reads it: the ``cirr_dataset`` annotation branch cloned into
``CIRR/cirr``, the NLVR2 images next to it)::

    CIRR/
        dev/dev-0-0-img0.png ...            test1/test1-0-0-img0.png ...        train/<n>/train-....png
        cirr/captions/cap.rc2.{train,val,test1}.json
        cirr/image_splits/split.rc2.{train,val,test1}.json     {"dev-0-0-img0": "./dev/dev-0-0-img0.png", ...}

Splits: ``val`` (ground truth known) and ``test1`` (answers held by the evaluation server; ``test`` is accepted
as an alias). The gallery is every image of the split's ``image_splits`` file, in file order; each image's path is
the relative path that file gives, under the CIRR root. Each query's reference image is excluded from its ranking.

Query fields: ``query_id`` is the ``pairid`` as a string (the key the server expects); ``target_ids`` holds
``target_hard``; ``subset_ids`` holds ``img_set.members`` unchanged (six images, the reference among them;
Recall_subset ranks the members other than the reference). ``extra``: ``pairid`` (int), ``img_set_id``, and on
val ``target_soft`` (the soft labels the annotators gave, unused by the official metrics).
"""

from __future__ import annotations

from pathlib import Path

from clipmath.data.base import (
    CIRDataset,
    CIRQuery,
    build_cir_dataset,
    check_known_ids,
    expect_type,
    field_of,
    read_json,
    require_file,
)
from clipmath.errors import DatasetError

SPLITS = ("val", "test1", "train")
#: Other spellings of a split.
SPLIT_ALIASES = {"test": "test1", "dev": "val"}
LAYOUT = (
    "CIRR/cirr/captions/cap.rc2.{split}.json, CIRR/cirr/image_splits/split.rc2.{split}.json, "
    "images under CIRR/{dev,test1,train}/ at the paths the split file lists"
)


def load_cirr(root: str | Path, split: str = "val", check_images: bool = True) -> CIRDataset:
    """Load CIRR ``val`` or ``test1`` from the official layout (``root`` is the folder holding ``cirr/``).

    ``check_images``: stat every gallery image and raise :class:`DatasetError` if any is missing.
    """
    root = Path(root)
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise DatasetError(f"unknown CIRR split '{split}': use val or test1")
    captions_path = require_file(root, f"cirr/captions/cap.rc2.{split}.json", "CIRR", LAYOUT)
    split_path = require_file(root, f"cirr/image_splits/split.rc2.{split}.json", "CIRR", LAYOUT)

    listing = expect_type(read_json(split_path), dict, "the image list", split_path)
    image_paths = {str(name): root / str(relative) for name, relative in listing.items()}
    if not image_paths:
        raise DatasetError(f"{split_path} lists no images")
    entries = expect_type(read_json(captions_path), list, "the caption file", captions_path)

    queries = []
    seen_ids: set[str] = set()
    for position, entry in enumerate(entries):
        pairid = field_of(entry, "pairid", captions_path, position)
        img_set = field_of(entry, "img_set", captions_path, position)
        members = field_of(img_set, "members", captions_path, position)
        if not isinstance(members, list):
            raise DatasetError(f"{captions_path}: entry {position} img_set.members is not a list")
        query_id = str(pairid)
        if query_id in seen_ids:
            raise DatasetError(f"{captions_path}: pairid {query_id} appears twice")
        seen_ids.add(query_id)
        extra = {"pairid": int(pairid), "img_set_id": img_set.get("id")}
        target = entry.get("target_hard")
        if target is not None:
            extra["target_soft"] = dict(entry.get("target_soft") or {})
        queries.append(
            CIRQuery(
                query_id=query_id,
                reference_id=str(field_of(entry, "reference", captions_path, position)),
                caption=str(field_of(entry, "caption", captions_path, position)),
                target_ids=(str(target),) if target is not None else (),
                subset_ids=tuple(str(m) for m in members),
                extra=extra,
            )
        )

    check_known_ids(((q.query_id, "img_set", m) for q in queries for m in q.subset_ids or ()), image_paths, split_path)
    return build_cir_dataset(
        benchmark="cirr", name="cirr", split=split, root=root, queries=queries, image_paths=image_paths,
        listing=split_path, exclude_reference=True, check_images=check_images,
    )  # fmt: skip
