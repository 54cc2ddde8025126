import csv
import math

import pytest

from clipmath.data import SimatTriplet, load_simat
from clipmath.errors import DatasetError
from clipmath.eval import EmbeddingScores, GroundTruthLabelOracle, evaluate_simat
from tests.benchmark_folders import ANNOTATIONS, build_simat, pixel_features

SIMAT_DB = ANNOTATIONS / "simat" / "simat_db"


@pytest.fixture(scope="module")
def simat_root(tmp_path_factory):
    return build_simat(tmp_path_factory.mktemp("SIMAT"))


def _rows(name):
    with (SIMAT_DB / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("domain", ["dev", "test"])
def test_real_files_load_unchanged(simat_root, domain):
    transfos = [r for r in _rows("transfos.csv") if (r["is_test"] == "True") == (domain == "test")]
    triplets = {r["region_id"]: r for r in _rows("triplets.csv")}
    captions = (SIMAT_DB / "captions.txt").read_text().splitlines()
    dataset = load_simat(simat_root, domain)
    assert dataset.split == domain
    assert len(dataset.queries) == len(transfos)
    assert dataset.gallery_ids == sorted(triplets, key=lambda r: int(triplets[r]["dataset_id"]))
    for query, row in zip(dataset.queries, transfos):
        source = triplets[row["region_id"]]
        assert (query.query_id, query.source_id, query.field) == (row["transfo_id"], row["region_id"], row["field"])
        assert (query.source_word, query.target_word) == (row["value"], row["target"])
        assert query.source_triplet == SimatTriplet(source["subj"], source["rel"], source["obj"])
        assert query.target_triplet.get(query.field) == row["target"]
        assert query.weight == pytest.approx(1 / math.sqrt(float(row["norm2"])))
        assert query.target_caption == captions[int(row["target_ids"])]
    assert dataset.image_path("61") == simat_root / "simat_db" / "images" / "images" / "61.png"


def test_caption_ids_index_distinct_triplets_in_first_appearance_order(simat_root):
    """The documented meaning of target_caption_id (the OSCAR matrix column) holds on the real files."""
    order = list(dict.fromkeys((r["subj"], r["rel"], r["obj"]) for r in _rows("triplets.csv")))
    for domain in ("dev", "test"):
        for query in load_simat(simat_root, domain, check_images=False).queries:
            t = query.target_triplet
            assert order[query.target_caption_id] == (t.subj, t.rel, t.obj)


def test_every_query_has_ground_truth_images(simat_root):
    dataset = load_simat(simat_root, "test", check_images=False)
    for query in dataset.queries:
        answers = dataset.target_image_ids(query)
        assert answers and query.source_id not in answers
        assert all(dataset.triplets[i] == query.target_triplet for i in answers)


def test_end_to_end_with_label_oracle(simat_root):
    dataset = load_simat(simat_root, "dev")
    gallery = pixel_features([dataset.image_path(i) for i in dataset.gallery_ids])
    row = dataset.gallery_row
    # a perfect transformation: the query vector is an image that carries the target triplet
    queries = gallery[[row[dataset.target_image_ids(q)[0]] for q in dataset.queries]]
    result = evaluate_simat(dataset, EmbeddingScores(queries, gallery), GroundTruthLabelOracle())
    assert result.score == pytest.approx(100.0)
    assert set(result.per_field) == {"subj", "rel", "obj"}
    # the identity "transformation" retrieves another image, never the source, and is judged wrong whenever the
    # retrieved image keeps the source triplet
    sources = gallery[[row[q.source_id] for q in dataset.queries]]
    identity = evaluate_simat(dataset, EmbeddingScores(sources, gallery))
    assert identity.score < 5.0
    assert "ground-truth labels" in identity.summary()


def test_missing_files(tmp_path):
    root = build_simat(tmp_path / "SIMAT", with_images=False)
    with pytest.raises(DatasetError, match=r"5859 of 5859 gallery images are missing.*simat_db/images/images/"):
        load_simat(root, "test")
    (root / "simat_db" / "triplets.csv").unlink()
    with pytest.raises(DatasetError, match=r"missing simat_db/triplets\.csv .*prepare_dataset\.py"):
        load_simat(root, "test")
    with pytest.raises(DatasetError, match="unknown SIMAT domain"):
        load_simat(root, "train")


def test_captions_are_optional_and_columns_checked(tmp_path):
    root = build_simat(tmp_path / "SIMAT", with_images=False)
    (root / "simat_db" / "captions.txt").unlink()
    dataset = load_simat(root, "dev", check_images=False)
    assert dataset.captions is None and dataset.queries[0].target_caption is None
    transfos = root / "simat_db" / "transfos.csv"
    transfos.write_text(transfos.read_text().replace("norm2", "n2", 1))
    with pytest.raises(DatasetError, match="lacks column.*norm2"):
        load_simat(root, "dev", check_images=False)
