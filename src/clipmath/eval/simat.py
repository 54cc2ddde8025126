"""The SIMAT score: how often the image retrieved for a transformation query shows the requested change.

    >>> from clipmath.data import load_simat
    >>> from clipmath.eval import EmbeddingScores, GroundTruthLabelOracle, evaluate_simat
    >>> dataset = load_simat("/data/SIMAT", "test")
    >>> # query_vectors: one per query (e.g. source image + lambda * (target word - source word)),
    >>> # gallery_vectors: one per dataset.gallery_ids entry
    >>> result = evaluate_simat(dataset, EmbeddingScores(query_vectors, gallery_vectors))
    >>> result.score

Protocol (SIMAT's ``eval.py``): per query, retrieve the single best gallery image other than the source image
(:func:`retrieve_simat`, tie rule of :mod:`.ranking`); an *oracle* judges whether that image matches the target;
the score is the weighted share of correct answers in percent, query weights ``1/sqrt(norm2)``
(:attr:`SimatQuery.weight`) normalised to sum to one.

Oracles (:class:`SimatOracle`):

* :class:`GroundTruthLabelOracle` (shipped default): correct iff the retrieved image's annotated triplet equals
  the target triplet (e.g. it is labelled ``dog / laying in / rug``).
* :class:`CaptionScoreOracle`: correct iff ``matrix[image, target caption] > threshold``. SIMAT's paper uses OSCAR
  image-text matching scores with threshold 0.5; given the released ``simat_db/oscar_similarity_matrix.pt``
  (rows in ``dataset_id`` order, columns the caption ids) it applies that rule without running OSCAR.

How the two differ: OSCAR judges the pixels against a caption, so it accepts images whose Visual Genome label
differs but which still show the target ("a dog on a carpet" for "a dog laying on a rug"), and rejects labelled
matches it does not recognise; the label oracle trusts the annotations only, is exact and reproducible, but
inherits Visual Genome's label noise and misses synonyms. Scores from the two oracles are therefore not
interchangeable: compare a label-oracle score only with other label-oracle scores, and the paper's numbers only
with :class:`CaptionScoreOracle` on the released OSCAR matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from clipmath.data.simat import FIELDS, SimatDataset, SimatQuery
from clipmath.errors import DatasetError
from clipmath.eval.ranking import ScoreSource, score_source_for

#: SIMAT's decision threshold on OSCAR matching scores.
OSCAR_THRESHOLD = 0.5
#: Where a SIMAT folder holds the released OSCAR matrix.
OSCAR_MATRIX = Path("simat_db") / "oscar_similarity_matrix.pt"


@runtime_checkable
class SimatOracle(Protocol):
    """Judges retrieved images: ``judge`` returns one bool per query (True: the image shows the target)."""

    label: str

    def judge(
        self, dataset: SimatDataset, queries: Sequence[SimatQuery], retrieved_ids: Sequence[str]
    ) -> np.ndarray: ...


@dataclass
class GroundTruthLabelOracle:
    """Correct iff the retrieved image's annotated (subject, relation, object) equals the target triplet."""

    label: str = "ground-truth labels"

    def judge(self, dataset: SimatDataset, queries: Sequence[SimatQuery], retrieved_ids: Sequence[str]) -> np.ndarray:
        return np.array(
            [dataset.triplets.get(image_id) == query.target_triplet for query, image_id in zip(queries, retrieved_ids)],
            dtype=bool,
        )


@dataclass
class CaptionScoreOracle:
    """Correct iff ``matrix[row of the retrieved image, target caption id] > threshold``.

    ``matrix``: (images in ``dataset.gallery_ids`` order, captions) scores, e.g. SIMAT's OSCAR matrix.
    """

    matrix: np.ndarray
    threshold: float = OSCAR_THRESHOLD
    label: str = "caption scores"

    @classmethod
    def from_file(
        cls, path: str | Path, threshold: float = OSCAR_THRESHOLD, label: str = "OSCAR"
    ) -> CaptionScoreOracle:
        """Load a saved torch tensor or NumPy array, e.g. the official ``simat_db/oscar_similarity_matrix.pt``."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(
                f"oracle matrix {path} not found (SIMAT ships it as simat_db/oscar_similarity_matrix.pt)"
            )
        if path.suffix == ".npy":
            matrix = np.load(path)
        else:
            import torch

            matrix = torch.load(path, map_location="cpu", weights_only=True)
            matrix = matrix.float().numpy() if hasattr(matrix, "numpy") else np.asarray(matrix)
        if matrix.ndim != 2:
            raise DatasetError(f"{path} holds a {matrix.ndim}-D array; expected (images, captions)")
        return cls(matrix=np.asarray(matrix, dtype=np.float32), threshold=threshold, label=label)

    def judge(self, dataset: SimatDataset, queries: Sequence[SimatQuery], retrieved_ids: Sequence[str]) -> np.ndarray:
        if self.matrix.shape[0] != len(dataset.gallery_ids):
            raise DatasetError(
                f"the oracle matrix has {self.matrix.shape[0]} rows, SIMAT has {len(dataset.gallery_ids)} images"
            )
        rows = np.array([dataset.gallery_row[i] for i in retrieved_ids], dtype=np.int64)
        columns = np.array([q.target_caption_id for q in queries], dtype=np.int64)
        if columns.size and columns.max() >= self.matrix.shape[1]:
            raise DatasetError(
                f"the oracle matrix has {self.matrix.shape[1]} caption columns; a query needs caption {columns.max()}"
            )
        return self.matrix[rows, columns] > self.threshold


@dataclass
class SimatResult:
    """SIMAT score in percent (weighted), with per-field scores and the oracle that judged."""

    domain: str
    oracle: str
    num_queries: int
    score: float
    per_field: dict[str, float] = field(default_factory=dict)
    correct: np.ndarray | None = None

    def summary(self) -> str:
        fields = "  ".join(f"{name} {value:.2f}" for name, value in self.per_field.items())
        return f"SIMAT {self.domain} ({self.num_queries} queries, oracle: {self.oracle}): {self.score:.2f}  [{fields}]"


def retrieve_simat(dataset: SimatDataset, scores: ScoreSource | np.ndarray, progress: bool = False) -> list[str]:
    """Per query, the best gallery id other than the query's source image (SIMAT's retrieval step)."""
    source = score_source_for(scores, dataset, f"SIMAT {dataset.split}")
    row = dataset.gallery_row
    results = source.top_k(1, [[row[q.source_id]] for q in dataset.queries], progress)
    return [dataset.gallery_ids[r] for r in results.rows[:, 0].tolist()]


def simat_score(dataset: SimatDataset, retrieved_ids: Sequence[str], oracle: SimatOracle | None = None) -> SimatResult:
    """Weighted percentage of queries whose retrieved image the ``oracle`` accepts (default: label oracle)."""
    oracle = oracle or GroundTruthLabelOracle()
    queries = dataset.queries
    if len(retrieved_ids) != len(queries):
        raise ValueError(f"{len(retrieved_ids)} retrieved ids for {len(queries)} queries")
    unknown = [i for i in retrieved_ids if i not in dataset.gallery_row]
    if unknown:
        raise ValueError(f"retrieved id '{unknown[0]}' is not a SIMAT image")
    if any(i == q.source_id for i, q in zip(retrieved_ids, queries)):
        raise ValueError("a retrieved image is its query's source image; SIMAT excludes it")
    correct = np.asarray(oracle.judge(dataset, queries, retrieved_ids), dtype=bool)
    weights = np.array([q.weight for q in queries], dtype=np.float64)
    per_field = {}
    for name in FIELDS:
        mask = np.array([q.field == name for q in queries])
        if mask.any():
            per_field[name] = float(np.average(correct[mask], weights=weights[mask]) * 100.0)
    return SimatResult(
        domain=dataset.split,
        oracle=oracle.label,
        num_queries=len(queries),
        score=float(np.average(correct, weights=weights) * 100.0),
        per_field=per_field,
        correct=correct,
    )


def evaluate_simat(
    dataset: SimatDataset, scores: ScoreSource | np.ndarray, oracle: SimatOracle | None = None, progress: bool = False
) -> SimatResult:
    """:func:`retrieve_simat` then :func:`simat_score`."""
    return simat_score(dataset, retrieve_simat(dataset, scores, progress), oracle)


def label_oracle(root: Path) -> GroundTruthLabelOracle:
    """The ``labels`` judge of the SIMAT spec (nothing to read from the folder)."""
    return GroundTruthLabelOracle()


def oscar_oracle(root: Path) -> CaptionScoreOracle:
    """The ``oscar`` judge of the SIMAT spec: the paper's rule on the folder's released OSCAR matrix."""
    return CaptionScoreOracle.from_file(Path(root) / OSCAR_MATRIX)
