"""Training data readers (captions, COCO, triplets), the concept vocabulary, and the on-disk feature cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from clipmath.compose.base import open_image
from clipmath.compose.searle import ConceptVocabulary, pseudo_phrase
from clipmath.errors import DatasetError
from clipmath.train.data import as_triplets, image_files, read_captions, read_coco_captions, read_triplets
from clipmath.train.features import FeatureCache
from tests.conftest import write_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    return folder, write_images(folder, 4)


def test_captions_from_json_and_tsv(tmp_path, images):
    folder, names = images
    (tmp_path / "c.json").write_text(json.dumps({names[0]: ["a dog", "a brown dog"], names[1]: "a cat"}))
    items = read_captions(folder, tmp_path / "c.json")
    assert [(i.path.name, i.captions) for i in items] == [(names[0], ("a dog", "a brown dog")), (names[1], ("a cat",))]
    (tmp_path / "c.tsv").write_text(f"{names[2]}\ta red car\n{names[2]}\ta car\n\n{names[3]}\ta tree\n")
    items = read_captions(folder, tmp_path / "c.tsv")
    assert [len(i.captions) for i in items] == [2, 1]
    (tmp_path / "bad.tsv").write_text("missing.jpg\tsomething\n")
    with pytest.raises(DatasetError, match="not in"):
        read_captions(folder, tmp_path / "bad.tsv")


def test_coco_captions_layout(tmp_path, images):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    os.rename(images[0], root / "val2017")
    names = images[1]
    data = {
        "images": [{"id": 7, "file_name": names[0]}, {"id": 9, "file_name": names[1]}],
        "annotations": [
            {"image_id": 7, "caption": "one"},
            {"image_id": 9, "caption": "two"},
            {"image_id": 7, "caption": "three"},
        ],
    }
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(data))
    by_root = read_coco_captions(root)
    by_file = read_coco_captions(root / "annotations" / "captions_val2017.json")
    assert [(i.path.name, i.captions) for i in by_root] == [(names[0], ("one", "three")), (names[1], ("two",))]
    assert by_root == by_file
    with pytest.raises(DatasetError, match="found: val2017"):
        read_coco_captions(root, split="train2017")


def test_triplets_from_files_and_any_iterable(tmp_path, images):
    folder, names = images
    rows = [{"reference": names[0], "caption": "is red", "target": names[1]}]
    (folder / "t.json").write_text(json.dumps(rows))
    (folder / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "t.tsv").write_text(f"{names[0]}\tis red\t{names[1]}\n")
    parsed = [read_triplets(folder / f"t.{ext}") for ext in ("json", "jsonl", "tsv")]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0][0].reference == folder / names[0] and parsed[0][0].caption == "is red"
    # the protocol benchmark loaders use: any iterable of (reference, caption, target)
    loader = ((folder / a, "swap", folder / b) for a, b in zip(names, names[1:]))
    assert len(as_triplets(loader)) == 3
    with pytest.raises(DatasetError, match="not found"):
        as_triplets([("nope.png", "x", names[0])], folder)
    (folder / "bad.json").write_text(json.dumps([{"reference": names[0]}]))
    with pytest.raises(DatasetError, match="needs 'reference', 'caption' and 'target'"):
        read_triplets(folder / "bad.json")
    assert len(image_files(folder)) == 4


def test_concept_vocabulary(tmp_path):
    default = ConceptVocabulary.load()
    assert len(default.concepts) >= 50
    assert all(pseudo_phrase(p, c) for c, phrases in default.phrases.items() for p in phrases)
    assert pseudo_phrase("a cat on a catwalk", "cat") == "a $ on a catwalk"
    assert pseudo_phrase("a dog", "cat") is None
    (tmp_path / "v.txt").write_text("# my concepts\nred car\nlamp\n")
    vocabulary = ConceptVocabulary.load(tmp_path / "v.txt")
    assert vocabulary.concepts == ["red car", "lamp"] and "a photo of a red car" in vocabulary.phrases["red car"]
    (tmp_path / "bad.json").write_text(json.dumps({"cat": ["a photo of a dog"]}))
    with pytest.raises(DatasetError, match="does not contain its concept"):
        ConceptVocabulary.load(tmp_path / "bad.json")


def test_feature_cache_reuses_disk_and_notices_changed_files(tmp_path, tiny_encoder, images, monkeypatch):
    folder, names = images
    paths = [folder / n for n in names]
    first = FeatureCache(tiny_encoder, tmp_path / "cache", progress=False)
    vectors = first.images(paths)
    expected = tiny_encoder.encode_images([open_image(p) for p in paths])
    np.testing.assert_allclose(vectors.numpy(), expected, atol=1e-6)
    texts = first.texts(["a", "b"])
    calls = []
    monkeypatch.setattr(tiny_encoder, "encode_images", lambda *a, **k: calls.append(a) or np.zeros((1, 32)))
    real_encode_files = tiny_encoder.encode_files
    monkeypatch.setattr(tiny_encoder, "encode_files", lambda *a, **k: calls.append(a) or real_encode_files(*a, **k))
    monkeypatch.setattr(tiny_encoder, "encode_texts", lambda *a, **k: calls.append(a))
    second = FeatureCache(tiny_encoder, tmp_path / "cache", progress=False)
    assert np.array_equal(second.images(paths).numpy(), vectors.numpy())
    assert np.array_equal(second.texts(["b", "a"]).numpy(), texts.numpy()[::-1])
    assert calls == []  # everything came from disk
    write_images(folder, 1, seed=5)  # rewrites the first file: its key (size, mtime) changes
    os.utime(paths[0], ns=(1, 1))
    second.images(paths)
    assert len(calls) == 1
