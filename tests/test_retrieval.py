"""Retriever: self-match exclusion, gallery-id operands, and picking up re-indexed files."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from clipmath.compose import CompositionQuery, parse_expression
from clipmath.retrieval import Retriever, RetrieverConfig
from clipmath.store import Gallery, index_folder


def open_retriever(store, encoder, **config) -> Retriever:
    return Retriever(Gallery.open(store), encoder, RetrieverConfig(**config))


def test_reference_and_expression_operands_are_excluded(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    retriever = open_retriever(store, tiny_encoder)
    by_path = CompositionQuery(reference=str(image_folder / "img_0003.png"))
    by_id = CompositionQuery(reference="img_0003.png")
    hits = retriever.search([by_path, by_id], method="image", k=12)
    assert all("img_0003.png" not in [h.id for h in row] and len(row) == 11 for row in hits)
    expr = CompositionQuery(terms=parse_expression("+img_0001.png -img_0002.jpg +img_0004.jpg"))
    found = [h.id for h in retriever.search([expr], method="expr", k=12)[0]]
    assert not {"img_0001.png", "img_0002.jpg", "img_0004.jpg"} & set(found) and len(found) == 9
    keep = open_retriever(store, tiny_encoder, exclude_reference=False)
    assert keep.search([by_id], method="image", k=1)[0][0].id == "img_0003.png"


def test_gallery_id_operand_uses_the_stored_vector(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    retriever = open_retriever(store, tiny_encoder)
    resolved = retriever.resolve_gallery_references(CompositionQuery(reference="img_0005.png"))
    row = retriever.snapshot.row_of("img_0005.png")
    np.testing.assert_array_equal(resolved.reference, retriever.snapshot.vectors[row])
    assert resolved.reference_id == "img_0005.png"


def test_refresh_sees_new_and_replaced_files(tmp_path, image_folder, tiny_encoder):
    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    retriever = open_retriever(store, tiny_encoder, index="flat")
    assert not retriever.refresh()
    old = np.array(retriever.snapshot.vectors[retriever.snapshot.row_of("img_0000.jpg")])
    Image.new("RGB", (40, 40), "yellow").save(image_folder / "img_0000.jpg")  # same name, new content
    os.utime(image_folder / "img_0000.jpg", ns=(1, 1))
    index_folder(store, image_folder, tiny_encoder, progress=False)
    assert retriever.refresh()
    new = retriever.snapshot.vectors[retriever.snapshot.row_of("img_0000.jpg")]
    assert not np.allclose(old, new)
    top = retriever.search([CompositionQuery(reference=new.copy())], method="image", k=1)[0][0]
    assert top.id == "img_0000.jpg" and abs(top.score - 1.0) < 1e-5  # the FAISS cache was rebuilt too


def test_huge_k_is_clamped_to_the_gallery_and_bad_k_is_refused(tmp_path, image_folder, tiny_encoder, monkeypatch):
    import pytest

    from clipmath.errors import ComposeError

    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    retriever = open_retriever(store, tiny_encoder)
    asked = []
    real_search = retriever.index.search
    monkeypatch.setattr(retriever.index, "search", lambda v, k, e=None: asked.append(k) or real_search(v, k, e))
    hits = retriever.search([CompositionQuery(text="a photo")], method="text", k=1_000_000_000)[0]
    assert len(hits) == len(retriever.snapshot) == 12
    assert asked == [12]  # the index was asked for the gallery's size, nothing was sized by the requested k
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ComposeError, match="'k'"):
            retriever.search([CompositionQuery(text="a photo")], method="text", k=bad)


def test_operands_given_as_vectors_are_excluded_by_their_ids(tmp_path, image_folder, tiny_encoder):
    """A front end that resolves gallery ids to vectors itself (the server) still gets operands excluded."""
    from clipmath.compose import build_query

    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    retriever = open_retriever(store, tiny_encoder)
    snapshot = retriever.snapshot

    def resolve(name):
        return np.array(snapshot.vectors[snapshot.row_of(name)]), name

    query = build_query(expression="+img_0001.png -img_0002.jpg +img_0004.jpg", resolve_image=resolve)
    assert all(isinstance(t.image, np.ndarray) for t in query.terms)
    found = [h.id for h in retriever.search([query], method="expr", k=12)[0]]
    assert not {"img_0001.png", "img_0002.jpg", "img_0004.jpg"} & set(found) and len(found) == 9
    keep = open_retriever(store, tiny_encoder, exclude_reference=False)
    assert len(keep.search([query], method="expr", k=12)[0]) == 12


def test_image_names_no_file_system_accepts_are_compose_errors(tmp_path, image_folder, tiny_encoder):
    import pytest

    from clipmath.errors import ComposeError

    store = tmp_path / "s"
    index_folder(store, image_folder, tiny_encoder, progress=False)
    retriever = open_retriever(store, tiny_encoder)
    for name in ("a\x00.jpg", "x" * 5000 + ".jpg", "bad\udcff.jpg", "\ud800"):
        as_reference = (CompositionQuery(reference=name), "image")
        as_operand = (CompositionQuery(terms=parse_expression(f"+img_0001.png -{name}")), "expr")
        for query, method in (as_reference, as_operand):
            with pytest.raises(ComposeError) as info:
                retriever.search([query], method=method, k=3)
            str(info.value).encode("utf-8")  # the message itself is printable and serialisable
