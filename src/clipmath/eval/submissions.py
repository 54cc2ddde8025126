"""Prediction files for the CIRR and CIRCO test servers: build, validate, write, read.

    >>> from clipmath.data import load_cirr, load_circo
    >>> from clipmath.eval import EmbeddingScores, rank_cir
    >>> from clipmath.eval.submissions import write_cirr_submissions, write_circo_submission
    >>> cirr = load_cirr("/data/CIRR", "test1")
    >>> ranking = rank_cir(cirr, EmbeddingScores(query_vectors, gallery_vectors))      # top 50, reference removed
    >>> write_cirr_submissions(cirr, ranking, "submissions/", "my-model")
    (PosixPath('submissions/my-model_cirr_recall.json'), PosixPath('submissions/my-model_cirr_recall_subset.json'))

Formats (from the servers' documentation: CIRR's ``Test-split_server.md`` and CIRCO's README / ``evaluation.py``):

* **CIRR** (https://cirr.cecs.anu.edu.au/): one JSON object per metric. ``"version": "rc2"`` and ``"metric"``
  (``"recall"`` or ``"recall_subset"``), plus one key per test query, its ``pairid`` as a string, mapping to the
  top-50 gallery image names (``recall``) or the top-3 ``img_set`` members (``recall_subset``).
* **CIRCO** (https://circo.micc.unifi.it/): one JSON object mapping every query ``id`` (as a string) to its top-50
  COCO image ids (integers). No other keys: the server checks that the keys are exactly the query ids.

Every file is validated before it is written, and :func:`validate_submission_file` checks an existing one: every
query present and no unknown key, exactly the required number of predictions, no id repeated within a ranking (the
CIRCO server rejects repeats), the reference image never predicted, every id an image of the split (for CIRR's
subset file: a member of the query's ``img_set``). Problems raise :class:`clipmath.errors.SubmissionError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clipmath.data.base import CIRDataset
from clipmath.errors import SubmissionError
from clipmath.eval.cir import CIRRanking, subset_candidates

CIRR_VERSION = "rc2"
CIRR_METRICS = {"recall": 50, "recall_subset": 3}
CIRCO_COUNT = 50


# ---- building -------------------------------------------------------------------------------------------------
def _check_ranking(dataset: CIRDataset, ranking: CIRRanking, benchmark: str) -> None:
    if dataset.benchmark != benchmark:
        raise SubmissionError(f"{dataset.name} is not {benchmark.upper()}: cannot build a {benchmark} submission")
    if ranking.query_ids != [q.query_id for q in dataset.queries]:
        raise SubmissionError(
            f"the ranking was made for {ranking.dataset_name} {ranking.split}, not {dataset.name} {dataset.split}"
        )


def cirr_submissions(dataset: CIRDataset, ranking: CIRRanking) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two validated CIRR prediction objects: ``(recall, recall_subset)``."""
    _check_ranking(dataset, ranking, "cirr")
    if ranking.subset_ranked_ids is None:
        raise SubmissionError("the ranking has no img_set rankings; make it with rank_cir on a CIRR dataset")
    recall: dict[str, Any] = {"version": CIRR_VERSION, "metric": "recall"}
    subset: dict[str, Any] = {"version": CIRR_VERSION, "metric": "recall_subset"}
    for query_id, ids, subset_ids in zip(ranking.query_ids, ranking.ranked_ids, ranking.subset_ranked_ids):
        recall[query_id] = list(ids[: CIRR_METRICS["recall"]])
        subset[query_id] = list(subset_ids[: CIRR_METRICS["recall_subset"]])
    validate_cirr_submission(recall, dataset, "recall")
    validate_cirr_submission(subset, dataset, "recall_subset")
    return recall, subset


def circo_submission(dataset: CIRDataset, ranking: CIRRanking) -> dict[str, list[int]]:
    """The validated CIRCO prediction object: query id -> top-50 COCO image ids."""
    _check_ranking(dataset, ranking, "circo")
    submission = {
        query_id: [int(i) for i in ids[:CIRCO_COUNT]] for query_id, ids in zip(ranking.query_ids, ranking.ranked_ids)
    }
    validate_circo_submission(submission, dataset)
    return submission


# ---- validation -----------------------------------------------------------------------------------------------
def _ranking_problems(
    query_id: str,
    predictions: Any,
    count: int,
    reference: str,
    forbid_reference: bool,
    allowed: Mapping[str, Any] | set,
    where: str,
    as_str: Any,
) -> list[str]:
    if not isinstance(predictions, list):
        return [f"query {query_id}: predictions are a {type(predictions).__name__}, not a list"]
    problems = []
    if len(predictions) != count:
        problems.append(f"query {query_id}: {len(predictions)} predictions, the server needs exactly {count}")
    names = []
    for item in predictions:
        name = as_str(item)
        if name is None:
            problems.append(f"query {query_id}: prediction {item!r} has the wrong type")
            return problems
        names.append(name)
    if len(set(names)) != len(names):
        repeated = next(n for i, n in enumerate(names) if n in names[:i])
        problems.append(f"query {query_id}: image {repeated} is predicted twice")
    if forbid_reference and reference in names:
        problems.append(f"query {query_id}: the reference image {reference} is among the predictions")
    outside = [n for n in names if n not in allowed and n != reference]
    if outside:
        problems.append(f"query {query_id}: image {outside[0]} is not {where}")
    return problems


def _key_problems(submission: Mapping[str, Any], dataset: CIRDataset, reserved: tuple[str, ...]) -> list[str]:
    expected = [q.query_id for q in dataset.queries]
    present = set(submission) - set(reserved)
    problems = []
    missing = [q for q in expected if q not in present]
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} queries have no predictions, e.g. query {missing[0]}")
    unknown = sorted(present - set(expected))
    if unknown:
        problems.append(
            f"key '{unknown[0]}' is not a query of {dataset.name} {dataset.split}"
            + (f" ({len(unknown)} such keys)" if len(unknown) > 1 else "")
        )
    return problems


def _cirr_name(item: Any) -> str | None:
    return item if isinstance(item, str) else None


def _circo_name(item: Any) -> str | None:
    return str(item) if isinstance(item, int) and not isinstance(item, bool) else None


def cirr_submission_problems(
    submission: Any, dataset: CIRDataset, metric: str, allow_reference: bool = False
) -> list[str]:
    """Everything wrong with a CIRR prediction object for ``metric`` (``recall``/``recall_subset``); [] if valid.

    ``allow_reference``: accept the reference image among the predictions (never produced here).
    """
    if metric not in CIRR_METRICS:
        raise ValueError(f"CIRR metric is recall or recall_subset, not {metric!r}")
    if not isinstance(submission, Mapping):
        return [f"a CIRR submission is a JSON object, not a {type(submission).__name__}"]
    problems = []
    if submission.get("version") != CIRR_VERSION:
        problems.append(f'"version" must be "{CIRR_VERSION}" (found {submission.get("version")!r})')
    if submission.get("metric") != metric:
        problems.append(f'"metric" must be "{metric}" (found {submission.get("metric")!r})')
    problems += _key_problems(submission, dataset, ("version", "metric"))
    gallery = dataset.gallery_row
    subsets = subset_candidates(dataset) if metric == "recall_subset" else None
    for position, query in enumerate(dataset.queries):
        if query.query_id not in submission:
            continue
        allowed = set(subsets[position]) if subsets is not None else gallery
        where = "in the query's img_set" if subsets is not None else f"in the CIRR {dataset.split} split"
        problems += _ranking_problems(
            query.query_id,
            submission[query.query_id],
            CIRR_METRICS[metric],
            query.reference_id,
            not allow_reference,
            allowed,
            where,
            _cirr_name,
        )
    return problems


def circo_submission_problems(submission: Any, dataset: CIRDataset, allow_reference: bool = False) -> list[str]:
    """Everything wrong with a CIRCO prediction object; [] if valid.

    ``allow_reference``: accept the reference image among the predictions. CIRCO's server tolerates it (its own
    example file contains some) but this project's protocol removes it, so written files never hold it.
    """
    if not isinstance(submission, Mapping):
        return [f"a CIRCO submission is a JSON object, not a {type(submission).__name__}"]
    problems = _key_problems(submission, dataset, ())
    for query in dataset.queries:
        if query.query_id in submission:
            problems += _ranking_problems(
                query.query_id,
                submission[query.query_id],
                CIRCO_COUNT,
                query.reference_id,
                not allow_reference,
                dataset.gallery_row,
                "a COCO 2017 unlabeled image",
                _circo_name,
            )
    return problems


def _raise(problems: list[str], what: str) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise SubmissionError(f"invalid {what}: {problems[0]}{more}")


def validate_cirr_submission(submission: Any, dataset: CIRDataset, metric: str, allow_reference: bool = False) -> None:
    """Raise :class:`SubmissionError` on the first problem of a CIRR prediction object."""
    _raise(cirr_submission_problems(submission, dataset, metric, allow_reference), f"CIRR {metric} submission")


def validate_circo_submission(submission: Any, dataset: CIRDataset, allow_reference: bool = False) -> None:
    """Raise :class:`SubmissionError` on the first problem of a CIRCO prediction object."""
    _raise(circo_submission_problems(submission, dataset, allow_reference), "CIRCO submission")


# ---- files ----------------------------------------------------------------------------------------------------
def _write(obj: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_cirr_submissions(
    dataset: CIRDataset, ranking: CIRRanking, out_dir: str | Path, name: str = "submission"
) -> tuple[Path, Path]:
    """Validate, then write ``{name}_cirr_recall.json`` and ``{name}_cirr_recall_subset.json`` into ``out_dir``."""
    recall, subset = cirr_submissions(dataset, ranking)
    out = Path(out_dir)
    return _write(recall, out / f"{name}_cirr_recall.json"), _write(subset, out / f"{name}_cirr_recall_subset.json")


def write_circo_submission(dataset: CIRDataset, ranking: CIRRanking, path: str | Path) -> Path:
    """Validate, then write the CIRCO prediction file to ``path``."""
    return _write(circo_submission(dataset, ranking), Path(path))


def cirr_writer(dataset: CIRDataset, ranking: CIRRanking, output: Path, stem: str) -> list[Path]:
    """CIRR's files for :class:`~clipmath.eval.benchmarks.SubmissionFormat`: two files beside ``output``."""
    return list(write_cirr_submissions(dataset, ranking, output.parent, stem))


def circo_writer(dataset: CIRDataset, ranking: CIRRanking, output: Path, stem: str) -> list[Path]:
    """CIRCO's file for :class:`~clipmath.eval.benchmarks.SubmissionFormat`: ``output`` named ``stem``."""
    return [write_circo_submission(dataset, ranking, output.with_name(stem + output.suffix))]


def write_submissions(report: Any, output: str | Path) -> list[Path]:
    """Write the validated server file(s) of every method in an :class:`~clipmath.eval.EvalReport`.

    The benchmark's :class:`~clipmath.eval.benchmarks.SubmissionFormat` names the files: CIRCO writes ``output``
    itself; CIRR ``<stem>_cirr_recall.json`` and ``<stem>_cirr_recall_subset.json`` beside it. With several
    methods each file name gets ``-<method>`` after the stem. Benchmarks without a test server raise
    :class:`SubmissionError`, as does a report made with a query limit.
    """
    from clipmath.eval.benchmarks import BENCHMARKS, check_submission

    submission = check_submission(BENCHMARKS.get(report.benchmark), report.limit)
    output = Path(output)
    methods = report.methods()
    if not methods:
        raise SubmissionError("no method produced a ranking, so there is nothing to submit")
    written: list[Path] = []
    for method in methods:
        stem = output.stem if len(methods) == 1 else f"{output.stem}-{method}"
        for dataset in report.datasets:
            written += submission.write(dataset, report.rankings[(method, dataset.name)], output, stem)
    return written


def read_submission(path: str | Path) -> Any:
    """Parse a prediction file (``SubmissionError`` if missing or not JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubmissionError(f"submission file {path} not found") from None
    except json.JSONDecodeError as error:
        raise SubmissionError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None


def validate_submission_file(path: str | Path, dataset: CIRDataset, allow_reference: bool = False) -> str:
    """Check a file against ``dataset`` with its benchmark's own validator; returns the file's kind
    (``cirr:recall``, ``cirr:recall_subset`` or ``circo``)."""
    from clipmath.eval.benchmarks import check_submission, spec_of

    return check_submission(spec_of([dataset])).validate_file(path, dataset, allow_reference)


def validate_cirr_file(path: str | Path, dataset: CIRDataset, allow_reference: bool = False) -> str:
    """A CIRR prediction file: ``cirr:recall`` or ``cirr:recall_subset``."""
    submission = read_submission(path)
    metric = submission.get("metric") if isinstance(submission, Mapping) else None
    if metric not in CIRR_METRICS:
        raise SubmissionError(f'invalid CIRR submission {path}: "metric" must be "recall" or "recall_subset"')
    validate_cirr_submission(submission, dataset, metric, allow_reference)
    return f"cirr:{metric}"


def validate_circo_file(path: str | Path, dataset: CIRDataset, allow_reference: bool = False) -> str:
    """A CIRCO prediction file."""
    validate_circo_submission(read_submission(path), dataset, allow_reference)
    return "circo"
