"""Exact and FAISS search: identical top-k for exact vs flat, exclusions, ties, float16, the GPU code path on the
CPU, the index-kind registry, recall tuning and re-ranking."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from clipmath.errors import ClipmathError
from clipmath.search import ExactIndex, FaissIndex, IndexParams, exclusions_for, make_index, recall_at_k
from clipmath.search.kinds import factory_string


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


def test_one_query_top_rows_preselected_by_chunk_maxima_equal_topk():
    from clipmath.search.exact import _block_top

    rng = np.random.default_rng(2)
    scores = torch.from_numpy(rng.standard_normal((1, 50_021)).astype(np.float32))
    scores[0, 7:900] = -torch.inf  # excluded rows
    scores[0, 50_000:] = 9.0  # the best rows sit in the tail that fills no whole chunk
    values, rows = _block_top(scores, 42)
    expected_values, expected_rows = torch.topk(scores, 42, dim=1)
    torch.testing.assert_close(values, expected_values)
    assert sorted(rows[0].tolist()) == sorted(expected_rows[0].tolist())
    # and a whole search over a gallery long enough to take that path
    vectors = clustered(30_000, 8, 20)
    for gallery in (vectors, vectors.astype(np.float16)):
        found = ExactIndex(gallery).search(vectors[5:6], 10, [[5]]).rows
        np.testing.assert_array_equal(found, ExactIndex(gallery, block_rows=1000).search(vectors[5:6], 10, [[5]]).rows)
        assert 5 not in found[0]


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
    index = make_index(vectors, "hnsw")
    index.save(tmp_path / "x.index")
    again = FaissIndex.load(tmp_path / "x.index", "hnsw")
    np.testing.assert_array_equal(index.search(vectors[:5], 5).rows, again.search(vectors[:5], 5).rows)


def test_unknown_index_and_bad_dimension():
    with pytest.raises(ClipmathError, match="unknown index"):
        make_index(clustered(10, 4, 2), "annoy")
    with pytest.raises(ClipmathError, match="dimension 3"):
        ExactIndex(clustered(10, 4, 2)).search(np.ones((1, 3), np.float32), 1)


def test_exclusions_for_maps_ids_to_rows():
    assert exclusions_for(["a", "b", "c"], ["b", None, ["a", "zzz"]]) == [[1], [], [0]]


# ---- index kinds registry -------------------------------------------------------------------------------------
def test_index_kinds_registry_names_builtins_and_accepts_factory_strings():
    from clipmath.search import INDEX_KINDS, IndexKindError, kind_spec

    assert {"exact", "flat", "hnsw", "ivf", "ivfsq", "ivfpq", "ivfpq-fs", "ivfpq-opq"} <= set(INDEX_KINDS.names())
    assert not kind_spec("exact").approximate and kind_spec("hnsw").approximate
    vectors = clustered(2000, 16, 8)
    index = make_index(vectors, "IVF8,Flat", IndexParams(nprobe=8))
    assert index.kind == "IVF8,Flat" and index.ntotal == 2000
    np.testing.assert_array_equal(index.search(vectors[:5], 3).rows, brute_force(vectors, vectors[:5], 3))
    with pytest.raises(IndexKindError, match="did you mean 'hnsw'"):
        make_index(vectors, "hnws")


# ---- float16 and the torch (GPU) path ----------------------------------------------------------------------------
@pytest.mark.parametrize("n_queries", [1, 5, 70])  # per-query half GEMV below 64 queries, float32 GEMM above
def test_float16_exact_equals_float32_exact_of_the_same_values(n_queries):
    vectors = clustered(5000, 64, 30).astype(np.float16)
    queries = clustered(n_queries, 64, 30, seed=5)
    half = ExactIndex(vectors, block_rows=1024).search(queries, 10)
    full = ExactIndex(vectors.astype(np.float32)).search(queries, 10)
    np.testing.assert_array_equal(half.rows, full.rows)
    np.testing.assert_allclose(half.scores, full.scores, atol=1e-6)


def test_compiled_float16_kernel_gives_the_float32_exact_ids():
    from clipmath.search.rowdot import fused_kernel

    if fused_kernel("compiled") is None:
        pytest.skip("torch cannot compile a CPU kernel here (no C++ compiler)")
    vectors = clustered(5000, 64, 30).astype(np.float16)
    queries = clustered(3, 64, 30, seed=5)
    index = make_index(vectors, "exact", IndexParams(half_kernel="compiled"))
    assert index.half_kernel == "compiled"
    # a block of 4999 rows, then one of a single row (eager GEMV)
    fused = ExactIndex(vectors, block_rows=4999, half_kernel="compiled").search(queries, 10, [[0], [], [7]])
    full = ExactIndex(vectors.astype(np.float32)).search(queries, 10, [[0], [], [7]])
    np.testing.assert_array_equal(fused.rows, full.rows)
    np.testing.assert_allclose(fused.scores, full.scores, atol=1e-6)
    np.testing.assert_array_equal(index.search(queries, 10).rows, ExactIndex(vectors).search(queries, 10).rows)
    with pytest.raises(ValueError, match="half_kernel"):
        ExactIndex(vectors, half_kernel="fast")
    # near-ties: 3000 rows that differ in one coordinate by steps of 1/1024 (exact in float16), many equal
    near = np.tile(vectors[:1], (3000, 1))
    near[:, 1] += (np.arange(3000) % 97 * 2.0**-10).astype(np.float16)
    query = near[:1].astype(np.float32) + np.float32(1e-3)
    fused = ExactIndex(near, half_kernel="compiled").search(query, 25).rows
    np.testing.assert_array_equal(fused, ExactIndex(near.astype(np.float32)).search(query, 25).rows)


@pytest.mark.parametrize("build", ["native", "inductor"])
@pytest.mark.parametrize("threads", [1, 2])
def test_each_fused_float16_build_scores_like_float32(build, threads):
    from clipmath.search.rowdot import half_dot_kernel

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kernel = half_dot_kernel(build)
        if kernel is None:
            pytest.skip(f"the {build} float16 kernel cannot be built here")
        rng = np.random.default_rng(3)
        # dims with and without the 32- and 8-wide tails (inductor compiles per dim); 70,000 rows over two threads
        shapes = ((0, 64), (1, 64), (37, 45), (5, 7), (70_000, 96)) if build == "native" else ((1, 64), (37, 45))
        for rows, dim in (*shapes, (70_000, 64)):
            block = torch.from_numpy(rng.standard_normal((rows, dim)).astype(np.float16))
            query = torch.from_numpy(rng.standard_normal(dim).astype(np.float32))
            scores = kernel(block, query)
            assert scores.dtype == torch.float32 and scores.shape == (rows,)
            np.testing.assert_allclose(scores.numpy(), (block.double() @ query.double()).numpy(), rtol=1e-5, atol=1e-4)
        strided = torch.from_numpy(rng.standard_normal((50, 80)).astype(np.float16))[:, ::2]  # not contiguous
        np.testing.assert_allclose(
            kernel(strided, query[:40]).numpy(), (strided.float() @ query[:40]).numpy(), atol=1e-4
        )
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_native_float32_kernel_scores_like_float64_and_exact_search_keeps_its_ids(threads):
    from clipmath.search.rowdot import float_dot_kernel

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kernel = float_dot_kernel()
        if kernel is None:
            pytest.skip("the native kernels cannot be built here")
        rng = np.random.default_rng(4)
        for rows, dim in ((0, 64), (1, 64), (37, 45), (5, 7), (70_000, 96)):
            block = torch.from_numpy(rng.standard_normal((rows, dim)).astype(np.float32))
            query = torch.from_numpy(rng.standard_normal(dim).astype(np.float32))
            scores = kernel(block, query).numpy()
            np.testing.assert_allclose(scores, (block.double() @ query.double()).numpy(), rtol=1e-5, atol=1e-4)
        with pytest.raises(ValueError, match="float32"):
            kernel(torch.zeros(4, 8, dtype=torch.float16), torch.zeros(8))
        # 1-3 queries go through the kernel, 4 or more through torch's GEMM: the same ids and scores either way
        vectors = clustered(6000, 64, 30)
        queries = clustered(5, 64, 30, seed=9)
        truth = ExactIndex(vectors).search(queries, 10)
        for count in (1, 2, 3):
            part = ExactIndex(vectors, block_rows=2500).search(queries[:count], 10, [[3]] * count)
            alone = ExactIndex(vectors).search(queries[:count], 10)
            np.testing.assert_array_equal(alone.rows, truth.rows[:count])
            np.testing.assert_allclose(alone.scores, truth.scores[:count], atol=1e-6)
            assert not (part.rows == 3).any()
    finally:
        torch.set_num_threads(before)


def test_native_float16_kernel_is_built_once_and_reports_a_failed_build(tmp_path, monkeypatch):
    from clipmath.search import rowdot

    if rowdot.half_dot_kernel("native") is None:
        pytest.skip("the native float16 kernel cannot be built here")
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path))
    library = rowdot.build_native_library()
    assert library.parent == tmp_path / "kernels" and library.suffix == ".so"
    built_at = library.stat().st_mtime_ns
    assert rowdot.build_native_library() == library and library.stat().st_mtime_ns == built_at  # cached
    assert [path.name for path in library.parent.iterdir()] == [library.name]  # no scratch left behind
    with pytest.raises(RuntimeError, match="failed"):
        rowdot.build_native_library(compiler="false")  # a "compiler" that always fails
    with pytest.raises(ValueError, match="float16"):
        rowdot.half_dot_kernel("native")(torch.zeros(4, 8), torch.zeros(8))
    with pytest.raises(ValueError, match="query of shape"):  # the C loop would read past the query
        rowdot.half_dot_kernel("native")(torch.zeros(4, 8, dtype=torch.float16), torch.zeros(6))


def test_compiled_float16_kernel_falls_back_build_by_build(monkeypatch):
    from clipmath.search import rowdot

    monkeypatch.setattr(rowdot, "_loaded", {})
    monkeypatch.setattr(rowdot, "_native", [])
    monkeypatch.setattr(rowdot, "_warned", set())
    monkeypatch.setattr(rowdot, "_native_supported", lambda: "not an x86-64 machine")
    inductor = rowdot.half_dot_kernel("inductor")
    assert rowdot.fused_kernel("compiled") is inductor  # native refused: the next build serves
    assert rowdot.fused_kernel("auto") is None  # auto never compiles with torch: the GEMV, quietly
    monkeypatch.setattr(rowdot, "_loaded", {})
    monkeypatch.setattr(rowdot, "_LOADERS", {"native": lambda: (None, "no AVX2"), "inductor": lambda: (None, "no g++")})
    with pytest.warns(UserWarning, match="compiled float16 kernel unavailable.*no AVX2; no g\\+\\+"):
        assert rowdot.fused_kernel("compiled") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto falls back without a word, and a named kernel warns only once
        assert rowdot.fused_kernel("auto") is None and rowdot.fused_kernel("compiled") is None
    block, query = torch.ones(3, 4, dtype=torch.float16), torch.full((4,), 0.5)
    np.testing.assert_array_equal(rowdot.half_scores(block, query, "compiled").numpy(), [2.0, 2.0, 2.0])


def test_float16_memmap_gallery_is_searched_blockwise_with_exclusions(tmp_path):
    vectors = clustered(3000, 32, 10).astype(np.float16)
    path = tmp_path / "g.f16"
    vectors.tofile(path)
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=vectors.shape)
    queries = vectors[:4].astype(np.float32)
    exclude = [[0], [1], [], [3]]
    result = ExactIndex(mapped, block_rows=500).search(queries, 5, exclude)
    expected = ExactIndex(vectors.astype(np.float32)).search(queries, 5, exclude)
    np.testing.assert_array_equal(result.rows, expected.rows)
    assert 0 not in result.rows[0] and result.rows[2, 0] == 2


@pytest.mark.parametrize("n_queries", [3, 80])
def test_gpu_code_path_on_cpu_gives_the_float32_ids(n_queries):
    """The CUDA path (gallery resident in half precision, top-k in torch) run on the CPU: same ids as exact."""
    vectors = clustered(4000, 48, 25)
    queries = clustered(n_queries, 48, 25, seed=7)
    resident = ExactIndex(vectors, device="cpu", resident=True)
    assert resident.scan_dtype == torch.float16
    result = resident.search(queries, 10, [[0]] * n_queries)
    expected = ExactIndex(vectors).search(queries, 10, [[0]] * n_queries)
    np.testing.assert_array_equal(result.rows, expected.rows)
    np.testing.assert_allclose(result.scores, expected.scores, atol=1e-6)


def test_ties_survive_the_half_precision_scan():
    vectors = np.zeros((50, 4), dtype=np.float16)
    vectors[:, 0] = 1.0
    for resident in (False, True):
        rows = ExactIndex(vectors, block_rows=7, resident=resident).search(np.array([[1, 0, 0, 0]], np.float32), 4)
        assert rows.rows.tolist() == [[0, 1, 2, 3]]


def test_cuda_without_a_gpu_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ClipmathError, match="no CUDA GPU"):
        make_index(clustered(10, 4, 2), "exact", IndexParams(device="cuda"))


# ---- ANN that keeps its recall ----------------------------------------------------------------------------------
def test_recall_target_tunes_hnsw_and_holds_on_new_queries():
    data = clustered(6100, 32, 40)
    vectors, queries = data[:6000], data[6000:]  # new queries from the same distribution
    index = make_index(vectors, "hnsw", IndexParams(hnsw_m=8, ef_construction=20, recall=0.97, tune_queries=200))
    report = index.tuning
    assert report.reached and report.recall >= 0.97 and report.knob == "ef_search"
    recall = recall_at_k(brute_force(vectors, queries, 10), index.search(queries, 10).rows)
    assert recall >= 0.9, (recall, report.describe())


def test_ivfpq_opq_reranked_from_the_gallery_beats_plain_codes():
    data = clustered(3060, 16, 30)
    vectors, queries = data[:3000], data[3000:]
    truth = brute_force(vectors, queries, 10)
    params = IndexParams(nprobe=8, pq_m=2, threads=1)
    plain = make_index(vectors, "ivfpq-opq", params)
    reranked = make_index(vectors, "ivfpq-opq", IndexParams(nprobe=8, pq_m=2, refine=True, refine_factor=16))
    assert "OPQ2_16" in factory_string("ivfpq-opq", 3000, 16, params)
    import faiss

    # the polysemous code order (minutes of training at 1M, used by no clipmath search) is skipped
    assert not faiss.downcast_index(faiss.extract_index_ivf(plain.index)).do_polysemous_training
    recall_plain = recall_at_k(truth, plain.search(queries, 10).rows)
    recall_reranked = recall_at_k(truth, reranked.search(queries, 10).rows)
    assert recall_reranked > recall_plain + 0.1 and recall_reranked > 0.8, (recall_plain, recall_reranked)
    # re-ranked scores are the exact inner products of the gallery's own vectors
    hits = reranked.search(queries[:1], 3)
    np.testing.assert_allclose(hits.scores[0], vectors[hits.rows[0]] @ queries[0], atol=1e-6)


def test_recall_tuning_of_ivfpq_raises_nprobe_and_rerank_until_reached():
    vectors = clustered(5000, 32, 40)
    index = make_index(vectors, "ivfpq", IndexParams(pq_m=4, refine=True, refine_factor=4, recall=0.95, threads=1))
    assert index.tuning.reached and index.tuning.knob == "nprobe" and index.tuning.recall >= 0.95


def test_fast_scan_ivfpq_reranked_from_the_gallery_reaches_its_target():
    data = clustered(6050, 32, 40)
    vectors, queries = data[:6000], data[6000:]
    assert factory_string("ivfpq-fs", 1_000_000, 512, IndexParams()) == "IVF4000,PQ64x4fs"  # 32-byte codes
    assert factory_string("ivfsq", 1_000_000, 512, IndexParams(nlist=1024)) == "IVF1024,SQ8"
    params = IndexParams(refine=True, refine_factor=2, recall=0.95, tune_queries=200, threads=1)
    index = make_index(vectors, "ivfpq-fs", params)
    assert index.tuning.reached, index.tuning.describe()
    assert recall_at_k(brute_force(vectors, queries, 10), index.search(queries, 10).rows) >= 0.9
    hits = index.search(queries[:1], 3)
    np.testing.assert_allclose(hits.scores[0], vectors[hits.rows[0]] @ queries[0], atol=1e-6)


def test_recall_tuning_deepens_the_rerank_when_probing_more_lists_is_not_enough():
    data = clustered(6050, 32, 40)
    vectors, queries = data[:6000], data[6000:]
    # 2-byte codes: no nprobe reaches 0.95 from 10 candidates, so the tuner must re-rank deeper
    params = IndexParams(pq_m=2, refine=True, refine_factor=1, recall=0.95, tune_queries=200, threads=1)
    index = make_index(vectors, "ivfpq", params)
    report = index.tuning
    assert report.reached and report.recall >= 0.95 and report.refine_factor > 1, report.describe()
    assert index.params.refine_factor == report.refine_factor and index.params.nprobe == report.value
    assert recall_at_k(brute_force(vectors, queries, 10), index.search(queries, 10).rows) >= 0.9


def test_recall_tuning_reports_an_unreached_target_and_keeps_the_best_setting():
    vectors = clustered(4000, 32, 40)
    index = make_index(vectors, "ivfpq", IndexParams(pq_m=2, recall=0.99, tune_queries=100, threads=1))
    report = index.tuning
    assert not report.reached and report.recall < 0.99 and report.refine_factor is None
    assert "NOT reached" in report.describe() and report.settings_tried > 1
    assert index.params.nprobe == report.value  # the best setting measured is the one left in place


def test_faiss_build_from_float16_memmap_in_blocks(tmp_path):
    vectors = clustered(2000, 16, 8).astype(np.float16)
    path = tmp_path / "g.f16"
    vectors.tofile(path)
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=vectors.shape)
    index = make_index(mapped, "flat")
    expected = ExactIndex(vectors).search(vectors[:3].astype(np.float32), 5)
    np.testing.assert_array_equal(index.search(vectors[:3].astype(np.float32), 5).rows, expected.rows)
