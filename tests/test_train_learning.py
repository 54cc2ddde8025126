"""Honest learning checks on the offline pretrained model: each learned method trains for a few steps on CPU, its
loss falls, its checkpoint reloads bit-identical, and it beats its own untrained version on held-out queries of a
generated dataset whose targets are a known transformation of the reference.

* Combiner and SIMAT heads: recolouring of drawn shapes (``is blue`` / ``red → blue``), held-out drawing instances.
* OTI and phi: real photos (the shipped examples), target = the reference mirrored and zoomed in; phi learns from
  other crops of the photos and is scored on the untouched references.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipmath.compose import METHODS, get_composer
from clipmath.compose.adapted_delta import AdaptationHeads, AdaptedDelta
from clipmath.compose.checkpoint import load_checkpoint
from clipmath.compose.searle import ConceptVocabulary, InversionSettings, OtiComposer
from clipmath.train.adapter import adapter_task_factory
from clipmath.train.clip4cir import combiner_task_factory
from clipmath.train.config import AdapterConfig, CombinerConfig, OtiConfig, PhiConfig
from clipmath.train.features import FeatureCache
from clipmath.train.loop import fit, seed_everything
from clipmath.train.searle import phi_task_factory, run_oti
from clipmath.train.synthetic import make_shapes_dataset, make_views_dataset
from clipmath.train.validate import RetrievalValidator
from tests.conftest import GALLERY

pytestmark = pytest.mark.usefixtures("one_thread")

#: shipped example photos with one clear ImageNet object each (see examples/PROVENANCE.md)
PHOTOS = {
    "cat": "skimage/chelsea.png",
    "espresso": "skimage/coffee.png",
    "rocket": "skimage/rocket.jpg",
    "pizza": "coco/COCO_val2014_000000557731.jpg",
    "elephant": "coco/COCO_val2014_000000562207.jpg",
    "banana": "coco/COCO_val2014_000000579664.jpg",
    "umbrella": "coco/COCO_val2014_000000299319.jpg",
    "motorboat": "coco/COCO_val2014_000000348905.jpg",
    "candle": "coco/COCO_val2014_000000060623.jpg",
    "cheeseburger": "coco/COCO_val2014_000000210032.jpg",
    "sink": "coco/COCO_val2014_000000097017.jpg",
    "moped": "coco/COCO_val2014_000000354533.jpg",
    "wooden spoon": "coco/COCO_val2014_000000386164.jpg",
    "canoe": "coco/COCO_val2014_000000516750.jpg",
    "soup bowl": "coco/COCO_val2014_000000545385.jpg",
    "baseball player": "coco/COCO_val2014_000000078707.jpg",
}


def _queries_vectors(composer, encoder, validator):
    """The composed query vectors a validator scores (to compare two composers exactly)."""
    vectors = validator.gallery_vectors()
    from dataclasses import replace

    queries = [replace(q, reference=vectors[r]) for q, r in zip(validator.queries, validator.reference_rows)]
    return composer.compose(encoder, queries)


# ---- recolouring: Combiner and SIMAT heads -------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory, offline_encoder):
    dataset = make_shapes_dataset(tmp_path_factory.mktemp("shapes"), shapes=4, colours=4, instances=3)
    cache = FeatureCache(offline_encoder, progress=False)
    cache.images(dataset.images())
    return dataset, cache


def test_combiner_learns_recolouring(tmp_path, offline_encoder, shapes):
    dataset, cache = shapes
    held_out = range(2, 3)
    validator = RetrievalValidator.from_triplets(
        offline_encoder, dataset.triplets(held_out), dataset.images(held_out), cache=cache
    )
    factory = combiner_task_factory(offline_encoder, dataset.triplets(range(2)), cache)
    config = CombinerConfig(
        epochs=15, batch_size=32, lr=1e-3, projection_dim=256, hidden_dim=512, save_every=15, progress=False
    )
    seed_everything(config.seed)
    untrained = validator(factory(config).composer())  # the same initial weights as the run below
    result = fit(factory, config, tmp_path / "combiner")
    trained = validator(get_composer("combiner", offline_encoder, str(tmp_path / "combiner")))

    assert result.last_loss < result.first_loss
    assert trained["recall@1"] > untrained["recall@1"] and trained["mean_rank"] < untrained["mean_rank"]
    saved = load_checkpoint(tmp_path / "combiner", "combiner", offline_encoder)
    in_memory = result.task.tensors()
    assert all(torch.equal(saved.tensors[k], in_memory[k]) for k in in_memory)
    reloaded = get_composer("combiner", offline_encoder, str(tmp_path / "combiner"))
    np.testing.assert_array_equal(
        _queries_vectors(reloaded, offline_encoder, validator),
        _queries_vectors(result.task.composer(), offline_encoder, validator),
    )


def test_adapter_heads_learn_colour_words(tmp_path, offline_encoder, shapes):
    dataset, cache = shapes
    held_out = range(2, 3)
    queries, targets = dataset.delta_queries(held_out)
    validator = RetrievalValidator(offline_encoder, queries, targets, dataset.images(held_out), cache=cache)
    factory = adapter_task_factory(offline_encoder, dataset.captioned(range(2)), cache)
    config = AdapterConfig(epochs=40, batch_size=32, lr=1e-2, save_every=40, progress=False)
    untrained = validator(
        METHODS.get("adapted-delta").adopt(AdaptedDelta.from_heads(AdaptationHeads(offline_encoder.dim)))
    )
    result = fit(factory, config, tmp_path / "heads")
    trained = validator(get_composer("adapted-delta", offline_encoder, str(tmp_path / "heads")))

    assert result.last_loss < result.first_loss
    assert trained["recall@1"] > untrained["recall@1"] and trained["mean_rank"] < untrained["mean_rank"]
    saved = load_checkpoint(tmp_path / "heads", "adapter")
    assert all(torch.equal(saved.tensors[k], v) for k, v in result.task.tensors().items())


# ---- textual inversion: OTI and phi ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def views(tmp_path_factory, offline_encoder):
    dataset = make_views_dataset(tmp_path_factory.mktemp("views"), {k: GALLERY / v for k, v in PHOTOS.items()})
    cache = FeatureCache(offline_encoder, progress=False)
    cache.images(dataset.gallery() + dataset.training_views())
    validator = RetrievalValidator.from_triplets(offline_encoder, dataset.triplets(), dataset.gallery(), cache=cache)
    return dataset, cache, validator


def test_oti_inverts_images_into_pseudo_words(tmp_path, offline_encoder, views):
    dataset, cache, validator = views
    references = [t.reference for t in dataset.triplets()]
    config = OtiConfig(steps=20, ema_decay=0.8, batch_size=16, top_k=3, progress=False)
    concepts = ConceptVocabulary.load()
    concepts = ConceptVocabulary({c: concepts.phrases[c] for c in concepts.concepts[:12]})  # a short list: fast
    result = run_oti(offline_encoder, references, config, tmp_path / "oti", concepts, cache)
    assert result.images == len(references) and result.last_loss < result.first_loss

    composer = get_composer("oti", offline_encoder, str(tmp_path / "oti"))
    untrained = METHODS.get("oti").adopt(
        OtiComposer(torch.zeros(0, 384), torch.zeros(0, 384), InversionSettings(steps=0), seed=config.seed)
    )
    before, after = validator(untrained), validator(composer)
    assert after["recall@1"] > before["recall@1"] and after["mean_rank"] < before["mean_rank"]

    saved = load_checkpoint(tmp_path / "oti", "oti", offline_encoder)
    assert torch.equal(saved.tensors["tokens"], result.tokens)  # bit-identical on disk
    assert saved.extra["ids"] == [str(p) for p in references]


def test_oti_composer_looks_up_known_images_and_inverts_new_ones(tmp_path, offline_encoder, views, monkeypatch):
    dataset, cache, _ = views
    known = [dataset.reference(n) for n in dataset.names[:4]]
    config = OtiConfig(steps=3, batch_size=4, lambda_reg=0.0, progress=False)
    run_oti(offline_encoder, known, config, tmp_path / "oti", None, cache)
    composer = get_composer("oti", offline_encoder, str(tmp_path / "oti"))
    saved = load_checkpoint(tmp_path / "oti").tensors["tokens"]
    tokens = composer.pseudo_tokens(offline_encoder, cache.images(known).numpy())
    assert torch.equal(tokens, saved)  # found by feature, nothing inverted
    calls = []
    import clipmath.compose.searle as searle

    real = searle.invert
    monkeypatch.setattr(searle, "invert", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    new = cache.images([dataset.target(dataset.names[0])]).numpy()
    composer.pseudo_tokens(offline_encoder, np.concatenate([new, cache.images(known[:1]).numpy()]))
    assert calls == [1]  # only the unknown image was inverted …
    composer.pseudo_tokens(offline_encoder, new)
    assert calls == [1]  # … once


def test_phi_distilled_from_oti_generalises_to_new_images(tmp_path, offline_encoder, views):
    dataset, cache, validator = views
    teacher = OtiConfig(steps=12, ema_decay=0.7, batch_size=32, lambda_reg=0.0, progress=False)
    run_oti(offline_encoder, dataset.training_views(), teacher, tmp_path / "oti", None, cache)
    factory = phi_task_factory(offline_encoder, tmp_path / "oti")
    config = PhiConfig(epochs=25, batch_size=16, lr=1e-3, dropout=0.1, lambda_reg=0.0, save_every=25, progress=False)
    seed_everything(config.seed)
    untrained = validator(factory(config).composer())
    result = fit(factory, config, tmp_path / "phi")
    trained = validator(get_composer("searle", offline_encoder, str(tmp_path / "phi")))

    assert result.last_loss < result.first_loss
    assert trained["recall@1"] > untrained["recall@1"] and trained["mean_rank"] < untrained["mean_rank"]
    saved = load_checkpoint(tmp_path / "phi", "phi", offline_encoder)
    assert all(torch.equal(saved.tensors[k], v) for k, v in result.task.tensors().items())
    np.testing.assert_array_equal(
        _queries_vectors(get_composer("searle", offline_encoder, str(tmp_path / "phi")), offline_encoder, validator),
        _queries_vectors(result.task.composer(), offline_encoder, validator),
    )
