"""The transformers CLIP backend on the tiny model: loading, shapes, norms, pseudo-tokens, targetpad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.encoders import HFClipEncoder, load_encoder, resolve_model_name, target_pad
from clipmath.encoders.tiny import build_tiny_clip
from clipmath.errors import ModelLoadError


def test_tiny_model_loads_from_a_folder_like_a_real_checkpoint(tmp_path):
    folder = build_tiny_clip(tmp_path / "model", seed=3)
    encoder = HFClipEncoder.load(str(folder))
    assert encoder.info.model_id.startswith("local:model@") and not encoder.info.pretrained
    images = [Image.new("RGB", (50, 30), c) for c in ("red", "blue", "green")]
    vectors = encoder.encode_images(images, batch_size=2)
    texts = encoder.encode_texts(["a red square", "a blue one"])
    assert vectors.shape == (3, 32) and texts.shape == (2, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(images[:1]), vectors[:1], atol=1e-6)
    assert HFClipEncoder.load(str(folder)).info.model_id == encoder.info.model_id  # stable fingerprint


def test_batched_text_encoding_matches_single(tiny_encoder):
    texts = ["a", "a much longer sentence about a dog", "x y"]
    together = tiny_encoder.encode_texts(texts, batch_size=3)
    alone = np.concatenate([tiny_encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    with pytest.raises(TypeError):
        tiny_encoder.encode_texts("not a list")


def test_pseudo_token_fills_the_placeholder_and_has_gradients(tiny_encoder):
    table = tiny_encoder.token_embedding_table()
    dollar = tiny_encoder.placeholder_token_id()
    prompt = ["a photo of $ that is red"]
    # giving the placeholder its own embedding reproduces the plain encoding of the prompt
    same = tiny_encoder.text_features_with_pseudo_tokens(prompt, table.weight[dollar][None].detach())
    plain = tiny_encoder.text_features(tiny_encoder.tokenize(prompt))
    torch.testing.assert_close(same, plain)
    pseudo = torch.randn(1, table.embedding_dim, requires_grad=True)
    features = tiny_encoder.text_features_with_pseudo_tokens(prompt, pseudo)
    assert not torch.allclose(features, plain)
    features.sum().backward()
    assert pseudo.grad is not None and pseudo.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"exactly one '\$'"):
        tiny_encoder.text_features_with_pseudo_tokens(["no placeholder"], pseudo)


def test_targetpad_pads_only_elongated_images():
    wide = Image.new("RGB", (200, 100), "white")
    padded = target_pad(wide, 1.25)
    assert padded.size == (200, 200)
    assert padded.getpixel((100, 10)) == (0, 0, 0) and padded.getpixel((100, 100)) == (255, 255, 255)
    assert target_pad(Image.new("RGB", (110, 100)), 1.25).size == (110, 100)
    a = load_encoder("tiny-random-clip", preprocessing="targetpad")
    assert a.transform.key == "targetpad1.25"
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        load_encoder("tiny-random-clip", preprocessing="squash")


def test_auto_falls_back_to_the_offline_model_without_a_cached_clip(monkeypatch):
    monkeypatch.delenv("CLIPMATH_MODEL", raising=False)
    monkeypatch.setattr("clipmath.encoders._clip_in_local_cache", lambda name: False)
    assert resolve_model_name("auto") == "offline-imagenet-minilm"
    monkeypatch.setattr("clipmath.encoders._clip_in_local_cache", lambda name: True)
    assert resolve_model_name(None) == "openai/clip-vit-base-patch32"
    monkeypatch.setenv("CLIPMATH_MODEL", "tiny-random-clip")
    assert resolve_model_name(None) == "tiny-random-clip"


def test_fp16_is_ignored_on_cpu():
    encoder = load_encoder("tiny-random-clip", fp16=True)
    assert encoder.dtype == torch.float32


def test_bad_names_fail_with_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_encoder("./no/such/folder")
    with pytest.raises(ModelLoadError, match="could not load 'no-such/model' from the Hugging Face hub"):
        load_encoder("no-such/model")
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_encoder("tiny-random-clip", device="tpu")


def test_registry_names_and_arguments(tmp_path):
    from clipmath.encoders import ENCODERS

    assert ENCODERS.names()[:2] == ["offline-imagenet-minilm", "tiny-random-clip"]
    assert ENCODERS.get("offline-imagenet-minilm").pretrained and not ENCODERS.get("tiny-random-clip").pretrained
    seeded = load_encoder("tiny-random-clip:2")
    assert seeded.info.model_id == "tiny-random-clip:2"
    with pytest.raises(ModelLoadError, match="integer seed"):
        load_encoder("tiny-random-clip:abc")
    with pytest.raises(ModelLoadError, match="empty argument"):
        load_encoder("tiny-random-clip:")
    with pytest.raises(ModelLoadError, match="unknown encoder 'tiny-random-clp'; did you mean 'tiny-random-clip'"):
        load_encoder("tiny-random-clp")
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_encoder("tiny-random-clip", dtype="float8")
    assert load_encoder("tiny-random-clip", dtype="bfloat16").dtype == torch.bfloat16  # passed to the loader


def _finetuned_folder(tmp_path, preprocessing="targetpad1.25", kind="finetune"):
    """A folder laid out exactly as `clipmath train finetune` writes it: the transformers model + clipmath.json."""
    from clipmath.compose.checkpoint import describe, save_checkpoint

    base = load_encoder("tiny-random-clip:5")
    folder = tmp_path / "finetuned"
    base.save_pretrained(folder)
    save_checkpoint(describe(kind, base.info, preprocessing, {"epochs": 1}), folder)
    return folder


def test_a_finetuned_folder_loads_with_its_own_description(tmp_path):
    folder = _finetuned_folder(tmp_path)
    encoder = load_encoder(str(folder))
    assert encoder.transform.key == "targetpad1.25"  # the preprocessing it was trained with
    assert "fine-tuned from tiny-random-clip:5" in encoder.info.description
    assert encoder.info.model_id.startswith("local:finetuned@")  # its own space, not the base model's
    assert load_encoder(str(folder), preprocessing="clip").transform.key == "clip"  # an explicit choice wins
    description = folder / "clipmath.json"
    description.write_text(description.read_text().replace('"dim": 32', '"dim": 64'))
    with pytest.raises(ModelLoadError, match="describes a 64-d model"):
        load_encoder(str(folder))


def test_a_learned_method_checkpoint_is_not_a_model(tmp_path):
    folder = _finetuned_folder(tmp_path, kind="combiner")
    with pytest.raises(ModelLoadError, match="holds a 'combiner' checkpoint of a learned method, not a model"):
        load_encoder(str(folder))


def test_one_embedding_space_check():
    from clipmath.encoders import EmbeddingSpace, check_same_space
    from clipmath.errors import StoreError

    check_same_space(EmbeddingSpace("m", "clip", 32), EmbeddingSpace("m", None, 32), "the store")
    with pytest.raises(StoreError, match="the store holds embeddings of model 'a', but the model in use is 'b'"):
        check_same_space(EmbeddingSpace("a"), EmbeddingSpace("b"), "the store", error=StoreError)
    with pytest.raises(ModelLoadError, match="holds 32-d vectors, but the model in use is 64-d"):
        check_same_space(EmbeddingSpace("m", dim=32), EmbeddingSpace("m", dim=64), "x")
    with pytest.raises(ModelLoadError, match="preprocessing 'clip'.*'targetpad1.25' \\(hint\\)"):
        check_same_space(EmbeddingSpace("m", "clip"), EmbeddingSpace("m", "targetpad1.25"), "x", hint="hint")


def test_one_l2_normalise_helper():
    from clipmath.compose import normalise
    from clipmath.encoders import l2_normalise

    rows = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(rows), [[0.6, 0.8], [0.0, 0.0]])
    assert l2_normalise(rows).dtype == np.float32 and normalise is l2_normalise


def test_importing_the_encoders_package_does_not_import_torch():
    """Names, the registry and model identities are known without torch; backends load on first use."""
    import subprocess
    import sys

    code = (
        "import sys, clipmath.encoders as e, clipmath.encoders.identity, clipmath.encoders.lazy;"
        "assert e.ENCODERS.names() and e.EmbeddingSpace;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
