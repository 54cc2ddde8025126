import json
import shutil

import numpy as np
import pytest

from clipmath.data import load_cirr
from clipmath.errors import DatasetError
from clipmath.eval import EmbeddingScores, evaluate_cir, load_benchmark
from tests.benchmark_folders import ANNOTATIONS, build_cirr


@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory):
    return build_cirr(tmp_path_factory.mktemp("CIRR"))


@pytest.mark.parametrize("split", ["val", "test1"])
def test_real_samples_load_unchanged(cirr_root, split):
    raw = json.loads((ANNOTATIONS / f"cirr/captions/cap.rc2.{split}.json").read_text())
    listing = json.loads((ANNOTATIONS / f"cirr/image_splits/split.rc2.{split}.json").read_text())
    dataset = load_cirr(cirr_root, split)
    assert len(dataset.queries) == len(raw)
    assert dataset.gallery_ids == list(listing)
    assert dataset.exclude_reference
    for query, entry in zip(dataset.queries, raw):
        assert query.query_id == str(entry["pairid"])
        assert query.reference_id == entry["reference"]
        assert query.caption == entry["caption"]
        assert query.subset_ids == tuple(entry["img_set"]["members"])
        assert query.target_ids == ((entry["target_hard"],) if split == "val" else ())
        assert query.extra["pairid"] == entry["pairid"]
    first = dataset.gallery_ids[0]
    assert dataset.image_path(first) == cirr_root / listing[first]
    assert dataset.image_path(first).is_file()
    assert dataset.has_targets == (split == "val")


def test_test_alias_and_benchmark_loader(cirr_root):
    assert load_cirr(cirr_root, "test").split == "test1"
    [dataset] = load_benchmark("cirr", cirr_root)
    assert dataset.split == "val"


def test_end_to_end_with_image_embeddings(cirr_root):
    """Queries that embed the target image itself must find it first: ids, paths and rankings line up."""
    from PIL import Image

    from clipmath.encoders import load_encoder

    dataset = load_cirr(cirr_root, "val")
    encoder = load_encoder("tiny-random-clip")
    gallery = encoder.encode_images([Image.open(dataset.image_path(i)) for i in dataset.gallery_ids])
    row = dataset.gallery_row
    queries = gallery[[row[q.target_ids[0]] for q in dataset.queries]]
    result = evaluate_cir(dataset, EmbeddingScores(queries, gallery))
    assert result.metrics["R@1"] == 100.0
    assert result.metrics["R_subset@1"] == 100.0
    # the reference image is excluded: querying with it never returns it, so R@1 of that "method" is not trivial
    references = gallery[[row[q.reference_id] for q in dataset.queries]]
    reference_result = evaluate_cir(dataset, EmbeddingScores(references, gallery))
    assert reference_result.metrics["R@1"] < 100.0


def test_missing_annotation_file_names_it(tmp_path):
    root = build_cirr(tmp_path / "CIRR")
    (root / "cirr" / "image_splits" / "split.rc2.val.json").unlink()
    with pytest.raises(DatasetError, match=r"missing cirr/image_splits/split\.rc2\.val\.json .*expected layout"):
        load_cirr(root, "val")


def test_missing_root_and_unknown_split(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_cirr(tmp_path / "nowhere", "val")
    with pytest.raises(DatasetError, match="unknown CIRR split"):
        load_cirr(tmp_path, "train2")


def test_missing_image_is_reported(tmp_path):
    root = build_cirr(tmp_path / "CIRR")
    listing = json.loads((root / "cirr/image_splits/split.rc2.val.json").read_text())
    victim = next(iter(listing))
    (root / listing[victim]).unlink()
    with pytest.raises(DatasetError, match=f"1 of {len(listing)} gallery images are missing.*{victim}"):
        load_cirr(root, "val")
    assert load_cirr(root, "val", check_images=False).missing_images() == [victim]


def test_inconsistent_files_are_rejected(tmp_path):
    root = tmp_path / "CIRR"
    shutil.copytree(ANNOTATIONS / "cirr", root / "cirr")
    listing_path = root / "cirr/image_splits/split.rc2.val.json"
    listing = json.loads(listing_path.read_text())
    target = json.loads((root / "cirr/captions/cap.rc2.val.json").read_text())[0]["target_hard"]
    del listing[target]
    listing_path.write_text(json.dumps(listing))
    with pytest.raises(DatasetError, match=f"'{target}' is not listed in"):
        load_cirr(root, "val", check_images=False)


def test_malformed_json_and_missing_field(tmp_path):
    root = tmp_path / "CIRR"
    shutil.copytree(ANNOTATIONS / "cirr", root / "cirr")
    captions = root / "cirr/captions/cap.rc2.val.json"
    entries = json.loads(captions.read_text())
    del entries[3]["caption"]
    captions.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match="entry 3 has no 'caption' field"):
        load_cirr(root, "val", check_images=False)
    captions.write_text("[{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_cirr(root, "val", check_images=False)


def test_scores_must_match_dataset_shape(cirr_root):
    dataset = load_cirr(cirr_root, "val")
    with pytest.raises(ValueError, match="scores cover"):
        evaluate_cir(dataset, np.zeros((3, 3), dtype=np.float32))
