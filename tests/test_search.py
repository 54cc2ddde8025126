"""Exact and FAISS search: identical top-k for exact vs flat, exclusions, ties, k beyond the gallery."""

from __future__ import annotations

import numpy as np
import pytest

from clipmath.errors import ClipmathError
from clipmath.search import ExactIndex, FaissIndex, exclusions_for, make_index


def clustered(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    return np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])


def test_exact_blocked_matches_brute_force_and_faiss_flat():
    vectors = clustered(3000, 48, 20)
    queries = clustered(40, 48, 20, seed=1)
    exact = ExactIndex(vectors, block_rows=257, query_batch=7).search(queries, 10)
    flat = make_index(vectors, "flat").search(queries, 10)
    np.testing.assert_array_equal(exact.rows, brute_force(vectors, queries, 10))
    np.testing.assert_array_equal(exact.rows, flat.rows)
    np.testing.assert_allclose(exact.scores, flat.scores, atol=1e-5)
    assert np.all(np.diff(exact.scores, axis=1) <= 0)


def test_exclusions_remove_rows_and_keep_k():
    vectors = clustered(500, 16, 5)
    queries = vectors[:3]
    exclude = [[0], [], [2, int(brute_force(vectors, vectors[2:3], 2)[0, 1])]]
    for kind in ("exact", "flat"):
        result = make_index(vectors, kind).search(queries, 5, exclude)
        assert 0 not in result.rows[0] and result.rows[1, 0] == 1
        assert not set(exclude[2]) & set(result.rows[2].tolist())
        assert (result.rows >= 0).all()


def test_ties_break_by_row_and_blocks_do_not_matter():
    vectors = np.zeros((10, 4), dtype=np.float32)
    vectors[:, 0] = 1.0  # every row ties
    for block in (3, 100):
        rows = ExactIndex(vectors, block_rows=block).search(np.array([[1, 0, 0, 0]], np.float32), 4).rows
        assert rows.tolist() == [[0, 1, 2, 3]]


def test_k_larger_than_gallery_pads():
    vectors = clustered(4, 8, 2)
    for kind in ("exact", "flat"):
        result = make_index(vectors, kind).search(vectors[:1], 10)
        assert result.rows[0, :4].tolist() != [-1] * 4 and (result.rows[0, 4:] == -1).all()
        assert len(result.hits([f"id{i}" for i in range(4)])[0]) == 4


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_find_most_true_neighbours(kind):
    vectors = clustered(8000, 32, 50)
    queries = clustered(50, 32, 50, seed=3)
    truth = brute_force(vectors, queries, 10)
    found = make_index(vectors, kind).search(queries, 10).rows
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall > (0.9 if kind == "hnsw" else 0.3), recall


def test_faiss_index_round_trips_through_a_file(tmp_path):
    vectors = clustered(300, 16, 4)
    index = FaissIndex.build(vectors, "hnsw")
    index.save(tmp_path / "x.index")
    again = FaissIndex.load(tmp_path / "x.index", "hnsw")
    np.testing.assert_array_equal(index.search(vectors[:5], 5).rows, again.search(vectors[:5], 5).rows)


def test_unknown_index_and_bad_dimension():
    with pytest.raises(ClipmathError, match="unknown index"):
        make_index(clustered(10, 4, 2), "annoy")
    with pytest.raises(ValueError, match="dimension 3"):
        ExactIndex(clustered(10, 4, 2)).search(np.ones((1, 3), np.float32), 1)


def test_exclusions_for_maps_ids_to_rows():
    assert exclusions_for(["a", "b", "c"], ["b", None, ["a", "zzz"]]) == [[1], [], [0]]
