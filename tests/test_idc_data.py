"""Image-difference data: the generated change set in CLEVR-Change's layout, the loaders, the COCO-format scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from clipmath.caption.metrics import (
    CaptionItem,
    caption_metrics,
    read_coco_caption_items,
    score_caption_file,
    write_coco_files,
)
from clipmath.data.change_set import CHANGE_TYPES, make_change_set
from clipmath.data.clevr_change import load_clevr_change
from clipmath.data.spot_the_diff import load_spot_the_diff
from clipmath.errors import CaptionError, DatasetError

IDC_DATA = Path(__file__).parent / "data" / "idc"
SPOT_REFERENCES = IDC_DATA / "clip4idc-gt" / "spot_total_change_captions_reformat.json"


@pytest.fixture(scope="module")
def change_set(tmp_path_factory) -> Path:
    # as the release archive unpacks: clevr_change/data/...
    return make_change_set(tmp_path_factory.mktemp("cs") / "clevr_change" / "data", pairs=30, seed=3, image_size=48)


def test_change_set_has_clevr_change_layout_and_is_reproducible(change_set: Path, tmp_path: Path) -> None:
    for name in ("change_captions.json", "no_change_captions.json", "splits.json", "type_mapping.json"):
        assert (change_set / name).is_file()
    splits = json.loads((change_set / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(30))
    types = json.loads((change_set / "type_mapping.json").read_text())
    assert set(types) == set(CHANGE_TYPES) and sum(len(v) for v in types.values()) == 30
    assert (change_set / "sc_images" / "CLEVR_semantic_000007.png").is_file()
    assert (change_set / "nsc_images" / "CLEVR_nonsemantic_000007.png").is_file()
    again = make_change_set(tmp_path / "again", pairs=30, seed=3, image_size=48)
    for name in ("change_captions.json", "images/CLEVR_default_000011.png", "nsc_images/CLEVR_nonsemantic_000004.png"):
        assert (again / name).read_bytes() == (change_set / name).read_bytes()
    other = make_change_set(tmp_path / "other", pairs=30, seed=4, image_size=48)
    assert (other / "change_captions.json").read_bytes() != (change_set / "change_captions.json").read_bytes()


def test_every_change_is_visible_and_every_distractor_differs_globally(change_set: Path) -> None:
    from PIL import ImageChops

    dataset = load_clevr_change(change_set, "train")
    for pair in dataset.pairs:
        before, after = Image.open(pair.before).convert("RGB"), Image.open(pair.after).convert("RGB")
        box = ImageChops.difference(before, after).getbbox()
        assert box is not None, pair.pair_id  # nothing is ever unchanged pixel for pixel
        if not pair.changed:  # a re-lit / shifted scene differs almost everywhere
            assert (box[2] - box[0]) * (box[3] - box[1]) > 0.5 * 48 * 48


def test_clevr_change_loader_gives_change_and_no_change_pairs(change_set: Path) -> None:
    dataset = load_clevr_change(change_set.parent, "test")  # the folder above data/ works too
    assert dataset.root == change_set
    splits = json.loads((change_set / "splits.json").read_text())
    assert len(dataset) == 2 * len(splits["test"])
    first = dataset.pairs[0]
    number = splits["test"][0]
    assert first.pair_id == f"{number:06d}.png" and first.changed
    assert first.after.name == f"CLEVR_semantic_{number:06d}.png"
    captions = json.loads((change_set / "change_captions.json").read_text())
    assert list(first.captions) == captions[f"CLEVR_default_{number:06d}.png"]
    no_change = dataset.pairs[1]
    assert no_change.pair_id == first.pair_id + "_n" and no_change.change_type == "distractor"
    assert not no_change.changed and no_change.before == first.before
    only_changes = load_clevr_change(change_set, "test", include_no_change=False)
    assert all(p.changed for p in only_changes.pairs) and len(only_changes) == len(splits["test"])


@pytest.mark.parametrize("missing", ["splits.json", "type_mapping.json", "no_change_captions.json", "sc_images"])
def test_incomplete_clevr_change_folder_names_what_is_missing(change_set: Path, tmp_path: Path, missing) -> None:
    copy = shutil.copytree(change_set, tmp_path / "copy")
    target = copy / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError, match=missing.split(".")[0]):
        load_clevr_change(copy, "train")


def test_missing_clevr_change_image_is_named(change_set: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(change_set, tmp_path / "copy")
    victim = load_clevr_change(copy, "val").pairs[0].after
    victim.unlink()
    with pytest.raises(DatasetError, match=victim.name):
        load_clevr_change(copy, "val")


def _spot_folder(tmp_path: Path, split: str = "test", limit: int = 12) -> Path:
    """The real annotation file beside images generated under the names the release uses."""
    root = tmp_path / "spot-the-diff"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(IDC_DATA / "spot-the-diff" / "annotations" / f"{split}.json", root / "annotations" / f"{split}.json")
    entries = json.loads((root / "annotations" / f"{split}.json").read_text())
    (root / "images").mkdir()
    for i, entry in enumerate(entries[:limit] if limit else entries):
        Image.new("RGB", (32, 24), (i * 9 % 255, 40, 90)).save(root / "images" / f"{entry['img_id']}.png")
        Image.new("RGB", (32, 24), (i * 9 % 255, 90, 40)).save(root / "images" / f"{entry['img_id']}_2.png")
    return root


def test_spot_the_diff_loader_reads_the_real_annotations(tmp_path: Path) -> None:
    root = _spot_folder(tmp_path, "test", limit=0)
    dataset = load_spot_the_diff(root, "test")
    assert len(dataset) == 1404 and sum(len(p.captions) for p in dataset.pairs) == 2107
    first = dataset.pairs[0]
    assert first.pair_id == "256.png" and first.before.name == "256.png" and first.after.name == "256_2.png"
    assert first.captions[0] == "person with umbrella is gone"
    # the ids are exactly those of CLIP4IDC's COCO-format reference file
    references = json.loads(SPOT_REFERENCES.read_text())
    assert {p.pair_id for p in dataset.pairs} == {im["id"] for im in references["images"]}


def test_spot_the_diff_missing_image_and_annotation_are_named(tmp_path: Path) -> None:
    root = _spot_folder(tmp_path, "val", limit=12)
    with pytest.raises(DatasetError, match=r"_2\.png|\.png"):
        load_spot_the_diff(root, "val")  # only the first 12 pairs have images
    assert len(load_spot_the_diff(root, "val", check_images=False)) == 40
    with pytest.raises(DatasetError, match="train.json"):
        load_spot_the_diff(root, "train")


def test_coco_format_scores_equal_clipmath_format(tmp_path: Path) -> None:
    """eval-captions: COCO predictions + a COCO reference file score exactly like the same data inline."""
    references = json.loads(SPOT_REFERENCES.read_text())
    by_image: dict[str, list[str]] = {}
    for annotation in references["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation["caption"])
    image_ids = list(by_image)[:40]
    # a fake system: each pair's last reference, reworded for some
    predictions = [
        {"image_id": i, "caption": by_image[i][-1] if n % 3 else "there is a car"} for n, i in enumerate(image_ids)
    ]
    (tmp_path / "coco_predictions.json").write_text(json.dumps(predictions))
    inline = [
        {"image_id": p["image_id"], "prediction": p["caption"], "references": by_image[p["image_id"]]}
        for p in predictions
    ]
    (tmp_path / "inline.json").write_text(json.dumps(inline))
    coco = score_caption_file(tmp_path / "coco_predictions.json", meteor=False, references=SPOT_REFERENCES)
    own = score_caption_file(tmp_path / "inline.json", meteor=False)
    assert coco == own and coco.count == 40 and 0 < coco.cider < 10


def test_coco_format_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps([{"image_id": "nope.png", "caption": "x"}]))
    with pytest.raises(CaptionError, match="no references"):
        read_coco_caption_items(tmp_path / "p.json", SPOT_REFERENCES)
    with pytest.raises(CaptionError, match="COCO-format"):
        score_caption_file(tmp_path / "p.json", meteor=False)  # COCO predictions without a reference file
    (tmp_path / "dup.json").write_text(json.dumps([{"image_id": "2.png", "caption": "a"}] * 2))
    with pytest.raises(CaptionError, match="more than one"):
        read_coco_caption_items(tmp_path / "dup.json", SPOT_REFERENCES)
    with pytest.raises(CaptionError, match="annotations"):
        read_coco_caption_items(tmp_path / "dup.json", tmp_path / "dup.json")


def test_written_coco_files_round_trip(tmp_path: Path) -> None:
    items = [
        CaptionItem("1.png", "the cube moved", ("the red cube moved", "a cube changed place")),
        CaptionItem("2.png_n", "no change", ("nothing has changed",)),
    ]
    predictions, references = write_coco_files(items, tmp_path / "p.json", tmp_path / "r.json")
    assert read_coco_caption_items(predictions, references) == items
    direct = caption_metrics([i.prediction for i in items], [list(i.references) for i in items], meteor=False)
    assert score_caption_file(predictions, meteor=False, references=references) == direct
