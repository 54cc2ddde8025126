import copy
import dataclasses
import json
import re

import numpy as np
import pytest

from clipmath.data import load_circo, load_cirr
from clipmath.errors import SubmissionError
from clipmath.eval import CIRRanking, cir_metrics, rank_cir, validate_cirr_submission
from clipmath.eval.submissions import (
    circo_submission,
    circo_submission_problems,
    cirr_submission_problems,
    cirr_submissions,
    read_submission,
    validate_submission_file,
    write_circo_submission,
    write_cirr_submissions,
)
from tests.benchmark_folders import (
    ANNOTATIONS,
    CIRCO_OFFICIAL,
    build_circo,
    build_cirr,
    circo_image_ids,
    write_coco_unlabeled,
)


@pytest.fixture(scope="module")
def cirr_test(tmp_path_factory):
    return load_cirr(build_cirr(tmp_path_factory.mktemp("CIRR")), "test1")


@pytest.fixture(scope="module")
def circo_test(tmp_path_factory):
    return load_circo(build_circo(tmp_path_factory.mktemp("CIRCO")), "test")


def random_ranking(dataset, seed=0):
    scores = np.random.default_rng(seed).standard_normal((len(dataset.queries), len(dataset.gallery_ids)))
    return rank_cir(dataset, scores.astype(np.float32))


@pytest.fixture(scope="module")
def cirr_files(cirr_test, tmp_path_factory):
    out = tmp_path_factory.mktemp("submissions")
    return write_cirr_submissions(cirr_test, random_ranking(cirr_test), out, "run1")


# ---- round trips -------------------------------------------------------------------------------------------------
def test_cirr_round_trip(cirr_test, cirr_files):
    recall_path, subset_path = cirr_files
    assert recall_path.name == "run1_cirr_recall.json" and subset_path.name == "run1_cirr_recall_subset.json"
    assert validate_submission_file(recall_path, cirr_test) == "cirr:recall"
    assert validate_submission_file(subset_path, cirr_test) == "cirr:recall_subset"
    recall, subset = read_submission(recall_path), read_submission(subset_path)
    assert (recall["version"], recall["metric"]) == ("rc2", "recall")
    assert (subset["version"], subset["metric"]) == ("rc2", "recall_subset")
    ranking = random_ranking(cirr_test)
    for query, ids, subset_ids in zip(cirr_test.queries, ranking.ranked_ids, ranking.subset_ranked_ids):
        assert recall[query.query_id] == ids[:50] and len(recall[query.query_id]) == 50
        assert subset[query.query_id] == subset_ids[:3]
        assert query.reference_id not in recall[query.query_id] + subset[query.query_id]
        assert set(subset[query.query_id]) <= set(query.subset_ids)
    assert set(recall) == {"version", "metric"} | {q.query_id for q in cirr_test.queries}


def test_circo_round_trip(circo_test, tmp_path):
    path = write_circo_submission(circo_test, random_ranking(circo_test), tmp_path / "circo.json")
    assert validate_submission_file(path, circo_test) == "circo"
    submission = read_submission(path)
    assert sorted(submission, key=int) == [str(i) for i in range(len(circo_test.queries))]
    for query in circo_test.queries:
        predictions = submission[query.query_id]
        assert len(predictions) == 50 == len(set(predictions))
        assert all(isinstance(p, int) for p in predictions)
        assert int(query.reference_id) not in predictions


def test_writer_refuses_a_gallery_too_small(tmp_path):
    """A gallery of fewer than 51 images cannot give 50 predictions besides the reference."""
    root = tmp_path / "CIRCO"
    (root / "annotations").mkdir(parents=True)
    queries = json.loads((ANNOTATIONS / "circo" / "annotations" / "test.json").read_text())[:5]
    (root / "annotations" / "test.json").write_text(json.dumps(queries))
    write_coco_unlabeled(root, [q["reference_img_id"] for q in queries] + list(range(1, 41)))
    dataset = load_circo(root, "test")
    with pytest.raises(SubmissionError, match="44 predictions, the server needs exactly 50"):
        circo_submission(dataset, random_ranking(dataset))


def test_ranking_from_other_dataset_is_refused(cirr_test, circo_test):
    with pytest.raises(SubmissionError, match="not CIRR"):
        cirr_submissions(circo_test, random_ranking(circo_test))
    with pytest.raises(SubmissionError, match="was made for"):
        circo_submission(circo_test, random_ranking(cirr_test))


# ---- each validator rejection ------------------------------------------------------------------------------------
def first_problem(problems):
    assert problems, "the validator accepted an invalid submission"
    return problems[0]


@pytest.fixture()
def cirr_objects(cirr_test, cirr_files):
    return read_submission(cirr_files[0]), read_submission(cirr_files[1])


def test_cirr_valid_files_have_no_problems(cirr_test, cirr_objects):
    recall, subset = cirr_objects
    assert cirr_submission_problems(recall, cirr_test, "recall") == []
    assert cirr_submission_problems(subset, cirr_test, "recall_subset") == []


@pytest.mark.parametrize(
    "mutation, message",
    [
        (lambda s, q: s.pop(q.query_id), "queries have no predictions"),
        (lambda s, q: s.__setitem__("99999999", s[q.query_id]), "key '99999999' is not a query"),
        (lambda s, q: s[q.query_id].pop(), "49 predictions, the server needs exactly 50"),
        (lambda s, q: s[q.query_id].__setitem__(1, s[q.query_id][0]), "is predicted twice"),
        (lambda s, q: s[q.query_id].__setitem__(0, q.reference_id), "reference image .* is among the predictions"),
        (lambda s, q: s[q.query_id].__setitem__(0, "test1-0-0-img9"), "is not in the CIRR test1 split"),
        (lambda s, q: s.__setitem__("version", "rc1"), '"version" must be "rc2"'),
        (lambda s, q: s.pop("metric"), '"metric" must be "recall"'),
        (lambda s, q: s.__setitem__(q.query_id, ",".join(s[q.query_id])), "not a list"),
        (lambda s, q: s[q.query_id].__setitem__(0, 5), "wrong type"),
    ],
)
def test_cirr_recall_rejections(cirr_test, cirr_objects, mutation, message):
    recall = copy.deepcopy(cirr_objects[0])
    mutation(recall, cirr_test.queries[3])
    assert re.search(message, first_problem(cirr_submission_problems(recall, cirr_test, "recall")))


def test_cirr_subset_rejections(cirr_test, cirr_objects):
    subset = copy.deepcopy(cirr_objects[1])
    query = cirr_test.queries[0]
    outsider = next(i for i in cirr_test.gallery_ids if i not in query.subset_ids)
    subset[query.query_id][0] = outsider
    assert "is not in the query's img_set" in first_problem(
        cirr_submission_problems(subset, cirr_test, "recall_subset")
    )
    subset = copy.deepcopy(cirr_objects[1])
    subset[query.query_id].append(subset[query.query_id][0])
    assert "4 predictions, the server needs exactly 3" in first_problem(
        cirr_submission_problems(subset, cirr_test, "recall_subset")
    )
    with pytest.raises(SubmissionError, match='"metric" must be "recall_subset"'):
        validate_cirr_submission(cirr_objects[0], cirr_test, "recall_subset")


@pytest.mark.parametrize(
    "mutation, message",
    [
        (lambda s, q: s.pop(q.query_id), "queries have no predictions"),
        (lambda s, q: s.__setitem__("version", "rc2"), "key 'version' is not a query"),
        (lambda s, q: s[q.query_id].pop(), "49 predictions"),
        (lambda s, q: s[q.query_id].__setitem__(1, s[q.query_id][0]), "is predicted twice"),
        (lambda s, q: s[q.query_id].__setitem__(0, int(q.reference_id)), "reference image"),
        (lambda s, q: s[q.query_id].__setitem__(0, 123), "not a COCO 2017 unlabeled image"),
        (lambda s, q: s[q.query_id].__setitem__(0, str(s[q.query_id][0])), "wrong type"),
        (lambda s, q: s[q.query_id].__setitem__(0, True), "wrong type"),
    ],
)
def test_circo_rejections(circo_test, tmp_path, mutation, message):
    path = write_circo_submission(circo_test, random_ranking(circo_test, seed=1), tmp_path / "c.json")
    submission = read_submission(path)
    mutation(submission, circo_test.queries[5])
    assert re.search(message, first_problem(circo_submission_problems(submission, circo_test)))
    path.write_text(json.dumps(submission))
    with pytest.raises(SubmissionError, match="invalid CIRCO submission"):
        validate_submission_file(path, circo_test)


def test_unreadable_files(tmp_path, circo_test):
    with pytest.raises(SubmissionError, match="not found"):
        read_submission(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SubmissionError, match="not valid JSON"):
        validate_submission_file(tmp_path / "bad.json", circo_test)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SubmissionError, match="JSON object"):
        validate_submission_file(tmp_path / "list.json", circo_test)


# ---- golden check against CIRCO's own evaluation script ----------------------------------------------------------
@pytest.fixture(scope="module")
def circo_official_val(tmp_path_factory):
    """The complete CIRCO val annotations with a gallery holding every id they or the example file mention."""
    import shutil

    root = tmp_path_factory.mktemp("CIRCO-official")
    shutil.copytree(CIRCO_OFFICIAL / "annotations", root / "annotations")
    example = json.loads((CIRCO_OFFICIAL / "submission_examples" / "submission_val.json").read_text())
    ids = set(circo_image_ids(root / "annotations")) | {i for ranked in example.values() for i in ranked}
    write_coco_unlabeled(root, sorted(ids), with_images=False)
    return load_circo(root, "val", check_images=False), example


def test_official_example_matches_circo_evaluation_script(circo_official_val):
    dataset, example = circo_official_val
    # CIRCO's script scores the submitted lists as they are (the reference is not removed), so do the same here
    as_submitted = dataclasses.replace(dataset, exclude_reference=False)
    ranking = CIRRanking.from_ranked_ids(as_submitted, example)
    metrics = cir_metrics(as_submitted, ranking).metrics
    # printed by miccunifi/CIRCO src/evaluation.py (commit 267b5c9) on these two files
    official = {
        "mAP@5": 0.4861111111111111,
        "mAP@10": 0.5177669552669554,
        "mAP@25": 0.5400354476441432,
        "mAP@50": 0.6020391550163254,
        "R@5": 0.9090909090909091,
        "R@10": 0.9090909090909091,
        "R@25": 1.3636363636363635,
        "R@50": 3.6363636363636362,
        "mAP@10[addition]": 0.08705357142857142,
        "mAP@10[direct_addressing]": 0.9197012138188607,
        "mAP@10[viewpoint]": 0.6172839506172839,
    }
    for key, value in official.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_official_example_holding_a_reference_is_scored_with_a_note(circo_official_val):
    """#11: query 189 of CIRCO's example lists its reference among exactly 50 ids. The protocol drops it (with a
    note) and scores the 49 left, as they stand, instead of asking for a deeper ranking."""
    dataset, example = circo_official_val
    assert dataset.exclude_reference and len(example["189"]) == 50
    ranking = CIRRanking.from_ranked_ids(dataset, example)
    assert len(ranking.ranked_ids[[q.query_id for q in dataset.queries].index("189")]) == 49
    result = cir_metrics(dataset, ranking)
    assert result.notes == [
        "query 189: its reference image 550727 was ranked at position 12; removed (the benchmark excludes it), "
        "49 ids scored"
    ]
    # no ground truth of query 189 follows its reference, so removing it changes no metric: the official numbers
    as_submitted = dataclasses.replace(dataset, exclude_reference=False)
    official = cir_metrics(as_submitted, CIRRanking.from_ranked_ids(as_submitted, example))
    assert result.metrics == pytest.approx(official.metrics, abs=1e-12) and official.notes == []
    assert result.metrics["mAP@50"] == pytest.approx(0.6020391550163254, abs=1e-9)
    short = {**example, "189": example["189"][:30]}  # a list that really is too short still is
    with pytest.raises(ValueError, match="ranking .* holds 29 ids .* fewer than the 49 that @50 needs; rank deeper"):
        cir_metrics(dataset, CIRRanking.from_ranked_ids(dataset, short))


def test_official_example_validates_only_when_reference_allowed(circo_official_val, tmp_path):
    dataset, example = circo_official_val
    path = tmp_path / "submission_val.json"
    path.write_text(json.dumps(example))
    assert validate_submission_file(path, dataset, allow_reference=True) == "circo"
    with pytest.raises(SubmissionError, match="query 189: the reference image 550727"):
        validate_submission_file(path, dataset)
