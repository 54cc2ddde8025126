"""CLIP4Cir stage 1 on the tiny CLIP: fine-tuning lowers the loss, beats the untouched model's element-wise sum on
held-out recolouring queries, and writes a model folder that loads back as an encoder with identical features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipmath.compose import get_composer
from clipmath.compose.checkpoint import load_checkpoint
from clipmath.encoders import load_encoder
from clipmath.train.clip4cir import FinetuneTask
from clipmath.train.config import FinetuneConfig
from clipmath.train.loop import TrainingError, fit
from clipmath.train.synthetic import make_shapes_dataset
from clipmath.train.validate import RetrievalValidator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), shapes=4, colours=4, instances=3)


def test_finetuning_learns_and_saves_a_loadable_model(tmp_path, shapes):
    encoder = load_encoder("tiny-random-clip")  # its own copy: fine-tuning changes the weights in place
    held_out = range(2, 3)
    validator = RetrievalValidator.from_triplets(
        encoder, shapes.triplets(held_out), shapes.images(held_out), reencode=True
    )
    untrained = validator(get_composer("sum"))
    config = FinetuneConfig(epochs=8, batch_size=32, lr=1e-3, progress=False)
    result = fit(lambda c: FinetuneTask(encoder, c, shapes.triplets(range(2))), config, tmp_path / "ft", validator)

    assert result.last_loss < result.first_loss
    trained = result.history[-1]["metrics"]
    assert trained["recall@1"] > untrained["recall@1"] and trained["mean_rank"] < untrained["mean_rank"]

    description = load_checkpoint(tmp_path / "ft", "finetune")
    assert description.model_id == "tiny-random-clip" and description.config["towers"] == "both"
    reloaded = load_encoder(str(tmp_path / "ft"))
    assert reloaded.info.model_id.startswith("local:ft@") and not reloaded.info.pretrained  # still random weights
    images = [shapes.path("circle", "red", 0), shapes.path("square", "blue", 1)]
    from clipmath.compose.base import open_image

    pictures = [open_image(p) for p in images]
    np.testing.assert_array_equal(reloaded.encode_images(pictures), encoder.encode_images(pictures))
    np.testing.assert_array_equal(reloaded.encode_texts(["is red"]), encoder.encode_texts(["is red"]))


def test_finetune_resumes_and_can_train_one_tower(tmp_path, shapes):
    triplets = shapes.triplets(range(2))
    straight = load_encoder("tiny-random-clip")
    config = FinetuneConfig(epochs=2, batch_size=32, lr=1e-3, towers="text", progress=False)
    fit(lambda c: FinetuneTask(straight, c, triplets), config, tmp_path / "straight")

    image_after_text_only = {k: v.clone() for k, v in straight.trainable_modules()["image"].state_dict().items()}
    interrupted = load_encoder("tiny-random-clip")
    fit(
        lambda c: FinetuneTask(interrupted, c, triplets),
        FinetuneConfig(**{**config.to_dict(), "epochs": 1}),
        tmp_path / "resumed",
    )
    fresh = load_encoder("tiny-random-clip")  # a new process would start from the base model again
    result = fit(lambda c: FinetuneTask(fresh, c, triplets), config, tmp_path / "resumed")
    assert result.resumed_from_epoch == 1
    for name, value in straight.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[name], value), name
    base = load_encoder("tiny-random-clip")
    for name, value in base.trainable_modules()["image"].state_dict().items():
        assert torch.equal(image_after_text_only[name], value)  # the image tower was not trained
    with pytest.raises(TrainingError, match="towers"):
        FinetuneTask(base, FinetuneConfig(towers="neither"), triplets)


def test_pixels_come_from_the_worker_pipeline_equal_to_load_images_and_bounded(shapes, monkeypatch):
    from clipmath.compose.base import open_image
    from clipmath.train import clip4cir

    encoder = load_encoder("tiny-random-clip")
    task = FinetuneTask(encoder, FinetuneConfig(), shapes.triplets(range(2)))
    rows = torch.tensor([3, 0, 3, 5])
    expected = encoder.load_images([open_image(task.images[int(r)]) for r in rows])
    assert torch.equal(task.pixels(rows), expected)
    monkeypatch.setattr(clip4cir, "CROP_CACHE_SIZE", 2)
    task.pixels(torch.tensor([1, 2, 4]))
    assert len(task._crops) == 2 and list(task._crops) == [2, 4]  # least recently used first out
