"""CLEVR-Change (Park et al., ICCV 2019) read from its release layout, as RobustChangeCaptioning and CLIP4IDC read it::

    ROOT/                       (or ROOT/data/, as the archive unpacks)
        images/CLEVR_default_000000.png          "before"
        sc_images/CLEVR_semantic_000000.png      after a semantic change
        nsc_images/CLEVR_nonsemantic_000000.png  after a distractor (viewpoint / lighting only)
        change_captions.json      {"CLEVR_default_000000.png": ["the ... changed to ...", ...]}
        no_change_captions.json   {"CLEVR_default_000000.png": ["no change was made", ...]}
        splits.json               {"train": [0, 1, ...], "val": [...], "test": [...]}   (integer ids)
        type_mapping.json         {"color": ["000000.png", ...], "material": [...], "add", "drop", "move"}

Every id gives two pairs: the change pair (id ``000000.png``, its type from ``type_mapping.json``) and the no-change
pair (id ``000000.png_n``, type ``distractor``), the ids RobustChangeCaptioning's COCO-format references use.
``clipmath data make-change-set`` writes this layout with generated 2D scenes (:mod:`clipmath.data.change_set`).
"""

from __future__ import annotations

from pathlib import Path

from clipmath.data.change_pairs import NO_CHANGE, ChangeDataset, ChangePair, read_json
from clipmath.errors import DatasetError

SPLITS = ("train", "val", "test")
FILES = ("change_captions.json", "no_change_captions.json", "splits.json", "type_mapping.json")


def clevr_change_root(root: str | Path) -> Path:
    """The folder holding the JSON files: ``root`` itself or its ``data/`` subfolder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"CLEVR-Change folder not found: {root}")
    if not (root / "splits.json").exists() and (root / "data" / "splits.json").exists():
        return root / "data"
    return root


def load_clevr_change(
    root: str | Path, split: str = "test", include_no_change: bool = True, check_images: bool = True
) -> ChangeDataset:
    """Load one split; ``include_no_change=False`` keeps only the semantic-change pairs."""
    if split not in SPLITS:
        raise DatasetError(f"CLEVR-Change has no split '{split}'; choose from {', '.join(SPLITS)}")
    folder = clevr_change_root(root)
    what = "CLEVR-Change"
    for name in FILES:
        if not (folder / name).is_file():
            raise DatasetError(f"{what}: {name} is missing from {folder}")
    for sub in ("images", "sc_images", "nsc_images"):
        if not (folder / sub).is_dir():
            raise DatasetError(f"{what}: the image folder {sub}/ is missing from {folder}")
    change_captions = read_json(folder / "change_captions.json", what)
    no_change_captions = read_json(folder / "no_change_captions.json", what)
    splits = read_json(folder / "splits.json", what)
    type_of = {
        image_id: change_type
        for change_type, ids in read_json(folder / "type_mapping.json", what).items()
        for image_id in ids
    }
    if split not in splits:
        raise DatasetError(f"{what}: splits.json has no '{split}' list")
    dataset = ChangeDataset("clevr-change", split, folder)
    for raw_id in splits[split]:
        number = int(raw_id)
        name = f"CLEVR_default_{number:06d}.png"
        pair_id = f"{number:06d}.png"
        if name not in change_captions:
            raise DatasetError(f"{what}: change_captions.json has no captions for {name}")
        dataset.pairs.append(
            ChangePair(
                pair_id,
                folder / "images" / name,
                folder / "sc_images" / name.replace("default", "semantic"),
                tuple(change_captions[name]),
                type_of.get(pair_id, ""),
            )
        )
        if include_no_change:
            if name not in no_change_captions:
                raise DatasetError(f"{what}: no_change_captions.json has no captions for {name}")
            dataset.pairs.append(
                ChangePair(
                    pair_id + "_n",
                    folder / "images" / name,
                    folder / "nsc_images" / name.replace("default", "nonsemantic"),
                    tuple(no_change_captions[name]),
                    NO_CHANGE,
                )
            )
    if check_images:
        dataset.check_images()
    return dataset
