"""Query controls: score cutoff, sort by date, filters before ranking (exact) and by deeper search (approximate),
paging; the same dataclass through the Python API."""

from __future__ import annotations

import numpy as np
import pytest

from clipmath.compose import CompositionQuery
from clipmath.errors import ClipmathError
from clipmath.retrieval import Retriever
from clipmath.search import make_index
from clipmath.store import Gallery, index_folder
from clipmath.store.controls import QueryControls, controlled_search
from clipmath.store.photometa import PhotoMeta
from tests.test_photo_metadata import photo_folder  # noqa: F401 - a fixture shared with the metadata tests

N, DIM = 4000, 32


def _meta(i: int) -> PhotoMeta:
    return PhotoMeta(
        id=f"f{i % 100}/img{i}.jpg",
        folder=f"f{i % 100}",
        taken=f"20{10 + i % 14:02d}-0{1 + i % 9}-1{i % 10}T12:00:00",
        taken_from="exif",
        camera="Canon EOS" if i % 3 == 0 else "Pixel 7",
        width=100 + i % 400,
        height=100 + i % 300,
        gps=None,
        size_bytes=1000,
    )


@pytest.fixture(scope="module")
def gallery():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metas = {m.id: m for m in map(_meta, range(N))}
    query = rng.standard_normal(DIM).astype(np.float32)
    return vectors, list(metas), metas, query / np.linalg.norm(query)


def _truth(vectors, ids, metas, query, controls, exclude=()):
    allowed = controls.mask(ids, metas)
    allowed[list(exclude)] = False
    rows = np.flatnonzero(allowed)
    scores = vectors[rows] @ query
    return [ids[r] for r in rows[np.lexsort((rows, -scores))]]


def test_an_exact_filter_keeping_one_percent_returns_k_hits_ranked_among_those_only(gallery):
    vectors, ids, metas, query = gallery
    controls = QueryControls(folder="f7")
    page = controlled_search(make_index(vectors), ids, query, 10, controls, metas, [0, 7], approximate=False)
    truth = _truth(vectors, ids, metas, query, controls, [7])
    assert [h.id for h in page.hits] == truth[:10] and page.complete and page.passed == len(truth) == 39
    assert all(metas[h.id].folder == "f7" for h in page.hits) and "f7/img7.jpg" not in [h.id for h in page.hits]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_an_approximate_filter_searches_deeper_until_k_pass(gallery, kind):
    vectors, ids, metas, query = gallery
    controls = QueryControls(glob="f3/*", camera="canon")
    index = make_index(vectors, kind)
    page = controlled_search(index, ids, query, 5, controls, metas, [], approximate=True)
    truth = _truth(vectors, ids, metas, query, controls)
    assert len(page.hits) == 5 and page.complete and page.searched_depth > 5 * 4
    if kind == "ivf":  # few lists probed: the index alone cannot reach every passing row, so they are scored
        assert page.exact_fallback and [h.id for h in page.hits] == truth[:5]
    assert all(metas[h.id].folder == "f3" and "Canon" in metas[h.id].camera for h in page.hits)
    assert len({h.id for h in page.hits} & set(truth[:5])) >= 4  # approximate, yet k correct-filter hits
    for hit in page.hits:
        assert abs(hit.score - float(vectors[ids.index(hit.id)] @ query)) < 1e-4


def test_a_filter_fewer_rows_pass_than_k_says_the_gallery_was_exhausted(gallery):
    vectors, ids, metas, query = gallery
    controls = QueryControls(folder="f5", after="2023-01-01", min_size=120)
    for approximate, index in ((False, make_index(vectors)), (True, make_index(vectors, "hnsw"))):
        # hnsw returns every row at full depth
        page = controlled_search(index, ids, query, 50, controls, metas, [], approximate=approximate)
        truth = _truth(vectors, ids, metas, query, controls)
        assert 0 < len(truth) < 50 and page.exhausted and page.complete
        assert {h.id for h in page.hits} == set(truth)


def test_cutoff_sort_by_date_and_paging(gallery):
    vectors, ids, metas, query = gallery
    index = make_index(vectors)
    cut = controlled_search(index, ids, query, 100, QueryControls(min_score=0.5), metas, [], approximate=False)
    scores = vectors @ query
    assert len(cut.hits) == int((scores >= 0.5).sum()) and all(h.score >= 0.5 for h in cut.hits) and cut.exhausted
    by_date = controlled_search(index, ids, query, 100, QueryControls(min_score=0.3, sort="date"), metas, [], False)
    dates = [metas[h.id].taken for h in by_date.hits]
    assert dates == sorted(dates, reverse=True) and len(by_date.hits) == min(100, int((scores >= 0.3).sum()))
    first = controlled_search(index, ids, query, 7, QueryControls(), metas, [], False).hits
    second = controlled_search(index, ids, query, 7, QueryControls(offset=7), metas, [], False).hits
    both = controlled_search(index, ids, query, 14, QueryControls(), metas, [], False).hits
    assert [h.id for h in first + second] == [h.id for h in both] and [h.rank for h in second] == list(range(7, 14))


def test_bad_controls_name_their_field():
    with pytest.raises(ClipmathError, match="'after'"):
        QueryControls(after="last tuesday")
    with pytest.raises(ClipmathError, match="sort"):
        QueryControls(sort="size")
    with pytest.raises(ClipmathError, match="min_score"):
        QueryControls(min_score=2.0)


def test_retriever_pages_with_metadata(tmp_path, photo_folder, tiny_encoder):  # noqa: F811
    store = tmp_path / "s"
    index_folder(store, photo_folder, tiny_encoder, progress=False)
    retriever = Retriever(Gallery.open(store), tiny_encoder)
    query = CompositionQuery(reference="2019/beach.jpg")
    page = retriever.search_page(query, QueryControls(folder="2023"), method="image", k=5)
    assert [h.id for h in page.hits] == ["2023/x/dog.jpg"] and page.exhausted
    page = retriever.search_page(query, QueryControls(sort="date"), method="image", k=5)
    assert [h.id for h in page.hits] == ["2023/x/dog.jpg", "plain.png"]  # the reference itself is excluded
    assert retriever.metadata()["2023/x/dog.jpg"].camera == "Apple iPhone 13"


@pytest.mark.parametrize(
    "controls",
    [
        QueryControls(folder="f7"),
        QueryControls(folder="f1/"),
        QueryControls(glob="f3*/img1*.jpg", camera="PIXEL"),
        QueryControls(after="2015-03-01", before="2020-01-01T00:00"),
        QueryControls(min_size=350, camera="canon"),
    ],
)
def test_the_vectorised_mask_agrees_with_the_per_item_rules(gallery, controls):
    from clipmath.store.controls import MetaColumns

    _, ids, metas, _ = gallery
    ids = ids + ["not/in/metas.jpg"]
    fast = controls.mask(ids, metas, MetaColumns.of(ids, metas))
    assert np.array_equal(fast, controls.mask(ids, metas)) and 0 < fast.sum() < len(ids)
