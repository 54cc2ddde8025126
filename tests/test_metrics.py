"""Hand-computed metric cases: ties, multiple targets, the reference excluded, K larger than the gallery."""

from pathlib import Path

import numpy as np
import pytest

from clipmath.data import CIRDataset, CIRQuery
from clipmath.data.simat import SimatDataset, SimatQuery, SimatTriplet
from clipmath.errors import DatasetError
from clipmath.eval import (
    CaptionScoreOracle,
    CIRRanking,
    EmbeddingScores,
    GroundTruthLabelOracle,
    ScoreMatrix,
    average_precision_at_k,
    cir_metrics,
    evaluate_cir,
    evaluate_simat,
    fashioniq_average,
    mean_average_precision_at_k,
    rank_cir,
    recall_at_k,
    simat_score,
)
from clipmath.eval.ranking import top_k_of_block, top_k_of_row
from clipmath.eval.retrieval_metrics import check_depth


def make_dataset(benchmark, gallery, queries, split="val"):
    exclude = benchmark != "fashioniq"
    return CIRDataset(
        benchmark=benchmark,
        name=benchmark,
        split=split,
        root=Path("."),
        queries=queries,
        gallery_ids=list(gallery),
        image_paths={g: Path(f"{g}.png") for g in gallery},
        exclude_reference=exclude,
    )


# ---- ranking and ties --------------------------------------------------------------------------------------------
def test_ties_break_by_gallery_order():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.9]], dtype=np.float32)
    assert top_k_of_row(scores[0], 5).tolist() == [1, 2, 4, 0, 3]
    assert top_k_of_row(scores[0], 2).tolist() == [1, 2]  # the tie straddles the cut: lower rows win
    assert top_k_of_row(scores[0], 2, excluded=[1]).tolist() == [2, 4]
    assert [r.tolist() for r in top_k_of_block(scores, 2, [[1]])] == [[2, 4]]


def test_all_tied_scores_follow_gallery_order_in_every_source():
    scores = np.zeros((3, 7), dtype=np.float32)
    exclude = [[0], [3], []]
    expected = [[1, 2, 3], [0, 1, 2], [0, 1, 2]]
    assert ScoreMatrix(scores).top_k(3, exclude).rows.tolist() == expected
    assert ScoreMatrix(scores, query_chunk=1).top_k(3, exclude).rows.tolist() == expected
    vectors = np.ones((7, 2), dtype=np.float32)  # every gallery vector identical: every score ties
    assert EmbeddingScores(np.ones((3, 2)), vectors).top_k(3, exclude).rows.tolist() == expected


def test_sources_and_chunk_sizes_agree_on_exactly_representable_scores():
    rng = np.random.default_rng(3)
    queries = rng.integers(-2, 3, (40, 4)).astype(np.float32)  # small integers: exact dot products, many ties
    gallery = rng.integers(-2, 3, (300, 4)).astype(np.float32)
    exclude = [[int(i) * 7 % 300] for i in range(40)]
    expected = [top_k_of_row(row, 10, e).tolist() for row, e in zip(queries @ gallery.T, exclude)]
    for source in (
        ScoreMatrix(queries @ gallery.T),
        ScoreMatrix(queries @ gallery.T, query_chunk=3),
        EmbeddingScores(queries, gallery),
        EmbeddingScores(queries, gallery, query_chunk=7),
    ):
        assert source.top_k(10, exclude).rows.tolist() == expected


def test_memmap_scores(tmp_path):
    scores = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float32, shape=(5, 4))
    scores[:] = np.arange(20, dtype=np.float32).reshape(5, 4)
    assert ScoreMatrix(scores, query_chunk=2).top_k(2).rows.tolist() == [[3, 2]] * 5


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        ScoreMatrix(np.array([[np.nan, 1.0]], dtype=np.float32)).top_k(1)


# ---- recall, subset recall, reference exclusion ------------------------------------------------------------------
def test_recall_hand_computed():
    ranked = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"], ["c", "b", "d"]]
    relevant = [{"a"}, {"a"}, {"a"}, {"a"}]
    assert recall_at_k(ranked, relevant, (1, 2, 3)) == {1: 25.0, 2: 50.0, 3: 75.0}


def test_k_larger_than_gallery():
    dataset = make_dataset("cirr", ["r", "x", "t"], [CIRQuery("q", "r", "c", ("t",), ("r", "x", "t"))])
    # scores: reference best, then x, then t
    result = evaluate_cir(dataset, np.array([[0.9, 0.5, 0.1]], dtype=np.float32))
    # two rankable images (reference excluded): t is 2nd, so R@1 misses and R@5..R@50 hit
    assert result.metrics["R@1"] == 0.0
    assert result.metrics["R@5"] == result.metrics["R@50"] == 100.0
    ranking = rank_cir(dataset, np.array([[0.9, 0.5, 0.1]], dtype=np.float32))
    assert ranking.ranked_ids == [["x", "t"]] and ranking.available == [2]


def test_reference_excluded_for_cirr_but_kept_for_fashioniq():
    gallery = ["r", "t", "x"]
    scores = np.array([[0.9, 0.8, 0.1]], dtype=np.float32)
    cirr = make_dataset("cirr", gallery, [CIRQuery("q", "r", "c", ("t",), ("r", "t", "x"))])
    fiq = make_dataset("fashioniq", gallery, [CIRQuery("q", "r", "c", ("t",))])
    assert evaluate_cir(cirr, scores).metrics["R@1"] == 100.0
    fiq_metrics = evaluate_cir(fiq, scores).metrics
    assert fiq_metrics == {"R@10": 100.0, "R@50": 100.0}
    assert rank_cir(fiq, scores).ranked_ids == [["r", "t", "x"]]


def test_cirr_recall_subset_hand_computed():
    # gallery rows:      r     a     t     b     o1    o2
    gallery = ["r", "a", "t", "b", "o1", "o2"]
    queries = [
        CIRQuery("1", "r", "c", ("t",), ("r", "a", "t", "b")),  # subset ranking without r: a, t, b -> t 2nd
        CIRQuery("2", "a", "c", ("t",), ("a", "t", "r", "b")),  # without a: t first
    ]
    scores = np.array([[9, 5, 4, 3, 8, 7], [0, 9, 6, 1, 8, 7]], dtype=np.float32)
    dataset = make_dataset("cirr", gallery, queries)
    ranking = rank_cir(dataset, scores)
    assert ranking.subset_ranked_ids == [["a", "t", "b"], ["t", "b", "r"]]
    assert ranking.ranked_ids == [["o1", "o2", "a", "t", "b"], ["o1", "o2", "t", "b", "r"]]
    metrics = cir_metrics(dataset, ranking).metrics
    assert metrics["R@1"] == 0.0 and metrics["R@5"] == 100.0
    assert metrics["R_subset@1"] == 50.0 and metrics["R_subset@2"] == 100.0
    assert metrics["Avg"] == 75.0


def test_subset_ties_follow_gallery_order():
    gallery = ["r", "b", "t"]
    dataset = make_dataset("cirr", gallery, [CIRQuery("1", "r", "c", ("t",), ("t", "r", "b"))])
    ranking = rank_cir(dataset, np.array([[1.0, 0.5, 0.5]], dtype=np.float32))
    # tie: b comes first in the gallery, although t comes first in img_set
    assert ranking.subset_ranked_ids == [["b", "t"]]


# ---- CIRCO mAP ---------------------------------------------------------------------------------------------------
def test_average_precision_hand_computed():
    ranked = ["a", "x", "b", "y", "c"]
    gts = {"a", "b", "c", "d"}
    # hits at ranks 1, 3, 5 with precisions 1, 2/3, 3/5
    assert average_precision_at_k(ranked, gts, 5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)  # min(5, 4) = 4
    assert average_precision_at_k(ranked, gts, 3) == pytest.approx((1 + 2 / 3) / 3)  # min(3, 4) = 3
    assert average_precision_at_k(ranked, gts, 2) == pytest.approx(1 / 2)
    assert average_precision_at_k(ranked, {"a"}, 5) == 1.0  # one gt found first: perfect
    assert average_precision_at_k(ranked, {"x"}, 5) == pytest.approx(1 / 2)
    assert average_precision_at_k(["a", "b"], {"a", "b"}, 50) == 1.0  # K beyond the ranking


def test_map_over_queries_and_duplicates():
    ranked = [["a", "b"], ["x", "a"]]
    assert mean_average_precision_at_k(ranked, [{"a"}, {"a"}], (1, 2)) == {1: 50.0, 2: 75.0}
    with pytest.raises(ValueError, match="twice"):
        mean_average_precision_at_k([["a", "a"]], [{"a"}], (2,))


def test_circo_metrics_end_to_end_hand_computed():
    gallery = ["ref", "g1", "n1", "g2", "g3", "n2"]
    query = CIRQuery(
        "0", "ref", "c", ("g1", "g2", "g3"), None, {"target_img_id": "g1", "semantic_aspects": ("addition",)}
    )
    dataset = make_dataset("circo", gallery, [query])
    # ranking after removing ref: g2, n1, g1, n2, g3
    scores = np.array([[10, 6, 7, 8, 4, 5]], dtype=np.float32)
    metrics = evaluate_cir(dataset, scores).metrics
    ap5 = (1 / 1 + 2 / 3 + 3 / 5) / 3
    assert metrics["mAP@5"] == pytest.approx(100 * ap5)
    assert metrics["mAP@50"] == pytest.approx(100 * ap5)
    assert metrics["mAP@10[addition]"] == pytest.approx(100 * ap5)
    assert metrics["R@5"] == 100.0  # recall counts only the annotated target g1 (3rd)


def test_short_rankings_are_refused():
    with pytest.raises(ValueError, match="fewer than"):
        check_depth([["a"] * 10], 50, available=[1000])
    check_depth([["a"] * 10], 50, available=[10])  # complete ranking of a small gallery: fine
    dataset = make_dataset("cirr", [f"i{n}" for n in range(100)], [CIRQuery("q", "i0", "c", ("i1",), ("i0", "i1"))])
    shallow = CIRRanking.from_ranked_ids(dataset, [["i1"] + [f"i{n}" for n in range(2, 11)]], [["i1"]])
    with pytest.raises(ValueError, match="rank deeper"):
        cir_metrics(dataset, shallow)


def test_ranked_id_lists_as_input():
    gallery = ["r", "t", "x", "y"]
    dataset = make_dataset("cirr", gallery, [CIRQuery("7", "r", "c", ("t",), ("r", "t", "x"))])
    ranking = CIRRanking.from_ranked_ids(dataset, {"7": ["r", "x", "t", "y"]}, {"7": ["x", "t"]})
    assert ranking.ranked_ids == [["x", "t", "y"]]  # the reference is dropped: CIRR excludes it
    metrics = cir_metrics(dataset, ranking).metrics
    assert metrics["R@1"] == 0.0 and metrics["R@5"] == 100.0 and metrics["R_subset@2"] == 100.0
    with pytest.raises(ValueError, match="not in the"):
        CIRRanking.from_ranked_ids(dataset, {"7": ["zzz"]})
    with pytest.raises(ValueError, match="twice"):
        CIRRanking.from_ranked_ids(dataset, {"7": ["t", "t"]})
    with pytest.raises(ValueError, match="no ranking for query 7"):
        CIRRanking.from_ranked_ids(dataset, {"8": ["t"]})


def test_test_split_cannot_be_scored():
    dataset = make_dataset("circo", ["a", "b"], [CIRQuery("0", "a", "c")], split="test")
    with pytest.raises(DatasetError, match="submission"):
        evaluate_cir(dataset, np.zeros((1, 2), dtype=np.float32))


def test_fashioniq_average_weighs_categories_equally():
    from clipmath.eval import EvalResult

    results = [
        EvalResult("fashioniq", f"fashioniq-{c}", "val", n, {"R@10": r10, "R@50": r50})
        for c, n, r10, r50 in [("dress", 10, 10.0, 40.0), ("shirt", 1000, 20.0, 50.0), ("toptee", 5, 30.0, 60.0)]
    ]
    average = fashioniq_average(results)
    assert average.metrics == {"R@10": 20.0, "R@50": 50.0}
    assert average.num_queries == 1015


# ---- SIMAT -------------------------------------------------------------------------------------------------------
def make_simat():
    dog_pillow = SimatTriplet("dog", "on", "pillow")
    dog_rug = SimatTriplet("dog", "on", "rug")
    cat_rug = SimatTriplet("cat", "on", "rug")
    triplets = {"s1": dog_pillow, "a": dog_rug, "b": cat_rug, "s2": cat_rug}
    queries = [
        SimatQuery("q1", "s1", "obj", "pillow", "rug", dog_pillow, dog_rug, 1, None, weight=1.0),
        SimatQuery("q2", "s2", "subj", "cat", "dog", cat_rug, dog_rug, 1, None, weight=3.0),
    ]
    gallery = ["s1", "a", "b", "s2"]
    return SimatDataset(
        name="simat",
        split="test",
        root=Path("."),
        queries=queries,
        gallery_ids=gallery,
        image_paths={g: Path(g) for g in gallery},
        triplets=triplets,
        captions=None,
    )


def test_simat_weighted_score_and_source_exclusion():
    dataset = make_simat()
    # q1 prefers its own source s1 (excluded), then a (dog on rug: correct); q2 prefers its source s2, then b (wrong)
    scores = np.array([[9, 5, 1, 0], [0, 1, 5, 9]], dtype=np.float32)
    result = evaluate_simat(dataset, scores)
    assert result.correct.tolist() == [True, False]
    assert result.score == pytest.approx(100 * 1.0 / (1.0 + 3.0))
    assert result.per_field == {"subj": 0.0, "obj": 100.0}
    with pytest.raises(ValueError, match="source image"):
        simat_score(dataset, ["s1", "a"])


def test_caption_score_oracle_from_file(tmp_path):
    import torch

    dataset = make_simat()
    matrix = torch.zeros(4, 3)
    matrix[2, 1] = 0.7  # image b matches caption 1 for the caption oracle, although its label says "cat on rug"
    torch.save(matrix, tmp_path / "oscar_similarity_matrix.pt")
    oracle = CaptionScoreOracle.from_file(tmp_path / "oscar_similarity_matrix.pt")
    retrieved = ["a", "b"]
    assert oracle.judge(dataset, dataset.queries, retrieved).tolist() == [False, True]
    assert GroundTruthLabelOracle().judge(dataset, dataset.queries, retrieved).tolist() == [True, False]
    assert simat_score(dataset, retrieved, oracle).score == pytest.approx(75.0)
    with pytest.raises(DatasetError, match="not found"):
        CaptionScoreOracle.from_file(tmp_path / "missing.pt")
    with pytest.raises(DatasetError, match="rows"):
        CaptionScoreOracle(np.zeros((2, 3), dtype=np.float32)).judge(dataset, dataset.queries, retrieved)
