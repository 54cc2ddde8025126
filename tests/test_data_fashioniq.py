import json

import numpy as np
import pytest

from clipmath.data import FASHIONIQ_CATEGORIES, join_captions, load_fashioniq, load_fashioniq_all
from clipmath.errors import DatasetError
from clipmath.eval import EmbeddingScores, evaluate_cir, fashioniq_average, load_benchmark, rank_cir
from tests.benchmark_folders import ANNOTATIONS, build_fashioniq, pixel_features


@pytest.fixture(scope="module")
def fiq_root(tmp_path_factory):
    return build_fashioniq(tmp_path_factory.mktemp("FashionIQ"))


def test_join_captions_follows_searle():
    assert join_captions("is shiny and silver.", " fit and flare ") == "is shiny and silver and fit and flare"
    assert join_captions("Is red?", "has sleeves,") == "Is red and has sleeves"


@pytest.mark.parametrize("category", FASHIONIQ_CATEGORIES)
def test_real_samples_load_unchanged(fiq_root, category):
    raw = json.loads((ANNOTATIONS / f"fashioniq/captions/cap.{category}.val.json").read_text())
    listing = json.loads((ANNOTATIONS / f"fashioniq/image_splits/split.{category}.val.json").read_text())
    dataset = load_fashioniq(fiq_root, category)
    assert dataset.name == f"fashioniq-{category}" and dataset.benchmark == "fashioniq"
    assert dataset.gallery_ids == listing
    assert not dataset.exclude_reference
    assert len(dataset.queries) == len(raw)
    for query, entry in zip(dataset.queries, raw):
        assert query.reference_id == entry["candidate"]
        assert query.target_ids == (entry["target"],)
        assert query.extra["captions"] == tuple(entry["captions"])
        first, second = (c.strip(".?, ") for c in entry["captions"])
        assert query.caption == f"{first} and {second}"
        assert query.extra["caption_reversed"] == f"{second} and {first}"
    assert dataset.image_path(listing[0]) == fiq_root / "images" / f"{listing[0]}.jpg"


def test_end_to_end_per_category_and_average(fiq_root):
    datasets = load_fashioniq_all(fiq_root)
    assert list(datasets) == list(FASHIONIQ_CATEGORIES)
    results = []
    for dataset in datasets.values():
        gallery = pixel_features([dataset.image_path(i) for i in dataset.gallery_ids])
        row = dataset.gallery_row
        # every other query embeds its target image, the rest a query-independent vector far from the gallery
        picks = [
            gallery[row[q.target_ids[0]]] if n % 2 == 0 else -gallery.mean(0) for n, q in enumerate(dataset.queries)
        ]
        result = evaluate_cir(dataset, EmbeddingScores(np.stack(picks), gallery))
        assert set(result.metrics) == {"R@10", "R@50"}
        assert result.metrics["R@10"] >= 50.0
        results.append(result)
        # FashionIQ keeps the reference in the ranking: querying with it returns it first
        references = gallery[[row[q.reference_id] for q in dataset.queries]]
        ranking = rank_cir(dataset, EmbeddingScores(references, gallery))
        assert [ids[0] for ids in ranking.ranked_ids] == [q.reference_id for q in dataset.queries]
    average = fashioniq_average(results)
    assert average.name == "fashioniq-average"
    assert average.metrics["R@10"] == pytest.approx(sum(r.metrics["R@10"] for r in results) / 3)
    assert average.num_queries == sum(len(d.queries) for d in datasets.values())


def test_target_queries_score_full_recall(fiq_root):
    dataset = load_fashioniq(fiq_root, "toptee")
    gallery = pixel_features([dataset.image_path(i) for i in dataset.gallery_ids])
    queries = gallery[[dataset.gallery_row[q.target_ids[0]] for q in dataset.queries]]
    assert evaluate_cir(dataset, EmbeddingScores(queries, gallery)).metrics == {"R@10": 100.0, "R@50": 100.0}


def test_benchmark_loader_loads_three_categories(fiq_root):
    assert [d.name for d in load_benchmark("fashioniq", fiq_root)] == [
        "fashioniq-dress",
        "fashioniq-shirt",
        "fashioniq-toptee",
    ]
    assert [d.name for d in load_benchmark("fashioniq-shirt", fiq_root)] == ["fashioniq-shirt"]
    with pytest.raises(DatasetError, match="unknown benchmark"):
        load_benchmark("fashion", fiq_root)


def test_missing_files_and_bad_arguments(tmp_path):
    root = build_fashioniq(tmp_path / "FashionIQ")
    (root / "captions" / "cap.shirt.val.json").unlink()
    with pytest.raises(DatasetError, match=r"missing captions/cap\.shirt\.val\.json"):
        load_fashioniq(root, "shirt")
    load_fashioniq(root, "dress")  # the other categories are still complete
    with pytest.raises(DatasetError, match="unknown FashionIQ category"):
        load_fashioniq(root, "shoes")
    (root / "images" / "B000QSGNOI.jpg").unlink()
    with pytest.raises(DatasetError, match="B000QSGNOI.jpg"):
        load_fashioniq(root, "dress")


def test_missing_images_folder(tmp_path):
    root = tmp_path / "FashionIQ"
    build_fashioniq(root)
    for image in (root / "images").iterdir():
        image.unlink()
    (root / "images").rmdir()
    with pytest.raises(DatasetError, match="missing folder images/"):
        load_fashioniq(root, "dress", check_images=False)
