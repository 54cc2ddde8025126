import json
import shutil

import numpy as np
import pytest

from clipmath.data import load_circo
from clipmath.errors import DatasetError
from clipmath.eval import EmbeddingScores, evaluate_cir, rank_cir
from tests.benchmark_folders import (
    ANNOTATIONS,
    CIRCO_DISTRACTORS,
    build_circo,
    circo_image_ids,
    pixel_features,
    write_coco_unlabeled,
)


@pytest.fixture(scope="module")
def circo_root(tmp_path_factory):
    return build_circo(tmp_path_factory.mktemp("CIRCO"))


@pytest.mark.parametrize("split", ["val", "test"])
def test_real_samples_load_unchanged(circo_root, split):
    raw = json.loads((ANNOTATIONS / f"circo/annotations/{split}.json").read_text())
    dataset = load_circo(circo_root, split)
    assert dataset.exclude_reference
    assert dataset.gallery_ids == [str(i) for i in circo_image_ids(circo_root / "annotations")] + [
        str(i) for i in CIRCO_DISTRACTORS
    ]
    assert len(dataset.queries) == len(raw)
    for query, entry in zip(dataset.queries, raw):
        assert query.query_id == str(entry["id"])
        assert query.reference_id == str(entry["reference_img_id"])
        assert query.caption == entry["relative_caption"]
        assert query.extra["shared_concept"] == entry["shared_concept"]
        if split == "val":
            assert query.target_ids == tuple(str(i) for i in entry["gt_img_ids"])
            assert query.extra["target_img_id"] == str(entry["target_img_id"]) == query.target_ids[0]
            assert query.extra["semantic_aspects"] == tuple(entry["semantic_aspects"])
        else:
            assert query.target_ids == ()
    reference = dataset.queries[0].reference_id
    assert dataset.image_path(reference) == (
        circo_root / "COCO2017_unlabeled" / "unlabeled2017" / f"{int(reference):012d}.jpg"
    )


def test_end_to_end_multiple_targets(circo_root):
    dataset = load_circo(circo_root, "val")
    gallery = pixel_features([dataset.image_path(i) for i in dataset.gallery_ids])
    row = dataset.gallery_row
    # the sum of a query's ground-truth images (the annotated target counted twice) ranks the target first and
    # the other ground truths next, above every other image
    queries = np.stack(
        [gallery[[row[t] for t in q.target_ids]].sum(0) + gallery[row[q.target_ids[0]]] for q in dataset.queries]
    )
    result = evaluate_cir(dataset, EmbeddingScores(queries, gallery))
    for k in (5, 10, 25, 50):
        assert result.metrics[f"mAP@{k}"] == pytest.approx(100.0)
    assert result.metrics["R@5"] == 100.0
    ranking = rank_cir(dataset, EmbeddingScores(queries, gallery))
    assert [ids[0] for ids in ranking.ranked_ids] == [q.extra["target_img_id"] for q in dataset.queries]
    assert all(key in result.metrics for key in ("mAP@10[cardinality]", "mAP@10[addition]"))


def test_reference_is_excluded(circo_root):
    dataset = load_circo(circo_root, "test")
    gallery = pixel_features([dataset.image_path(i) for i in dataset.gallery_ids])
    references = gallery[[dataset.gallery_row[q.reference_id] for q in dataset.queries]]
    ranking = rank_cir(dataset, EmbeddingScores(references, gallery))
    assert all(q.reference_id not in ids for q, ids in zip(dataset.queries, ranking.ranked_ids))
    assert all(len(ids) == 50 for ids in ranking.ranked_ids)
    with pytest.raises(DatasetError, match="no ground truth"):
        evaluate_cir(dataset, EmbeddingScores(references, gallery))


def test_missing_coco_image_list(tmp_path):
    root = tmp_path / "CIRCO"
    shutil.copytree(ANNOTATIONS / "circo" / "annotations", root / "annotations")
    (root / "COCO2017_unlabeled" / "unlabeled2017").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"missing COCO2017_unlabeled/annotations/image_info_unlabeled2017\.json"):
        load_circo(root, "val")


def test_annotated_image_absent_from_coco_list(tmp_path):
    root = tmp_path / "CIRCO"
    shutil.copytree(ANNOTATIONS / "circo" / "annotations", root / "annotations")
    ids = circo_image_ids(root / "annotations")
    gt = json.loads((root / "annotations/val.json").read_text())[0]["gt_img_ids"][1]
    write_coco_unlabeled(root, [i for i in ids if i != gt], with_images=False)
    with pytest.raises(DatasetError, match=f"ground-truth image '{gt}' is not listed"):
        load_circo(root, "val", check_images=False)


def test_missing_gallery_image(tmp_path):
    root = build_circo(tmp_path / "CIRCO")
    (root / "COCO2017_unlabeled" / "unlabeled2017" / f"{CIRCO_DISTRACTORS[3]:012d}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"1 of .* missing.*{CIRCO_DISTRACTORS[3]:012d}.jpg"):
        load_circo(root, "test")
