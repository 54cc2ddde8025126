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
