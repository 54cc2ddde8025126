"""Spot-the-Diff (Jhamtani & Berg-Kirkpatrick, EMNLP 2018) from its official annotation files::

    ROOT/
        annotations/{train,val,test}.json    [{"img_id": "5406", "sentences": ["...", ...]}, ...]
                                              (CLIP4IDC keeps them as ROOT/{split}.json: both are read)
        images/5406.png      "before"   (the resized-image release; ``resized_images/`` is read too)
        images/5406_2.png    "after"

Pair ids are ``"5406.png"``, the image ids of CLIP4IDC's COCO-format reference file
(``spot_total_change_captions_reformat.json``). The dataset has no change types.
"""

from __future__ import annotations

from pathlib import Path

from clipmath.data.change_pairs import ChangeDataset, ChangePair, read_json
from clipmath.errors import DatasetError

SPLITS = ("train", "val", "test")
IMAGE_FOLDERS = ("images", "resized_images")


def load_spot_the_diff(
    root: str | Path, split: str = "test", images: str | Path | None = None, check_images: bool = True
) -> ChangeDataset:
    """Load one split; ``images`` overrides the image folder (default ``ROOT/images``)."""
    if split not in SPLITS:
        raise DatasetError(f"Spot-the-Diff has no split '{split}'; choose from {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Spot-the-Diff folder not found: {root}")
    candidates = [root / "annotations" / f"{split}.json", root / f"{split}.json"]
    annotation = next((c for c in candidates if c.is_file()), None)
    if annotation is None:
        raise DatasetError(f"Spot-the-Diff: annotations/{split}.json is missing from {root}")
    if images is None:
        image_dir = next((root / n for n in IMAGE_FOLDERS if (root / n).is_dir()), root / IMAGE_FOLDERS[0])
    else:
        image_dir = Path(images).expanduser()
    if check_images and not image_dir.is_dir():
        raise DatasetError(f"Spot-the-Diff: the image folder {image_dir} is missing")
    entries = read_json(annotation, "Spot-the-Diff")
    if not isinstance(entries, list):
        raise DatasetError(f"Spot-the-Diff: {annotation} should be a list of {{img_id, sentences}} objects")
    dataset = ChangeDataset("spot-the-diff", split, root)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "img_id" not in entry or not entry.get("sentences"):
            raise DatasetError(f"Spot-the-Diff: item {i} of {annotation} has no 'img_id' or no 'sentences'")
        image_id = str(entry["img_id"])
        dataset.pairs.append(
            ChangePair(
                f"{image_id}.png",
                image_dir / f"{image_id}.png",
                image_dir / f"{image_id}_2.png",
                tuple(str(s) for s in entry["sentences"]),
            )
        )
    if check_images:
        dataset.check_images()
    return dataset
