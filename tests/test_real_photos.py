"""The offline pretrained model on real photos: captions find their photos, and delta arithmetic moves rankings.

Thresholds are far from the measured values (bench/real_photos.py: R@5 = 1.0, deltas to rank 1 in 13/18 cases)
but far above chance, so a broken encoder, compose method or search fails them.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from clipmath.compose import CompositionQuery, get_composer
from clipmath.search import ExactIndex
from clipmath.store import decode_image
from tests.conftest import EXAMPLES, GALLERY


@pytest.fixture(scope="module")
def photos(offline_encoder):
    captions = json.loads((EXAMPLES / "captions.json").read_text())
    ids = [f"coco/{name}" for name in captions] + ["skimage/chelsea.png", "skimage/coffee.png"]
    vectors = offline_encoder.encode_images([decode_image(GALLERY / i) for i in ids])
    return captions, ids, vectors


def test_human_captions_retrieve_their_photos(offline_encoder, photos):
    captions, ids, vectors = photos
    texts = [c for entry in captions.values() for c in entry["captions"]]
    truth = np.repeat(np.arange(len(captions)), 5)
    ranked = ExactIndex(vectors[: len(captions)]).search(offline_encoder.encode_texts(texts), 5).rows
    r1 = np.mean(ranked[:, 0] == truth)
    r5 = np.mean([t in row for row, t in zip(ranked, truth)])
    assert r1 > 0.4 and r5 > 0.8, (r1, r5)  # chance: 0.045 and 0.23


@pytest.mark.parametrize(
    ("word", "photo"), [("pizza", "coco/COCO_val2014_000000557731.jpg"), ("cup of coffee", "skimage/coffee.png")]
)
def test_delta_moves_the_target_up(offline_encoder, photos, word, photo):
    _, ids, vectors = photos
    cat = ids.index("skimage/chelsea.png")
    query = CompositionQuery(reference=vectors[cat], source="a photo of a cat", target=f"a photo of a {word}")
    index = ExactIndex(vectors)

    def rank(method: str, lam: float = 1.0) -> int:
        vector = get_composer(method).compose(offline_encoder, [replace(query, lam=lam)])
        return index.search(vector, len(ids), [[cat]]).rows[0].tolist().index(ids.index(photo)) + 1

    assert rank("image") > 5
    assert rank("delta", 1.0) <= 2
    assert rank("delta", 0.0) == rank("image")  # λ = 0 is the image alone
