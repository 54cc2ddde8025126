"""MAGIC decoding: deterministic, max length and end token, guidance raises the target score, any target vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.caption import DECODERS, MagicConfig, MagicDecoder, load_language_model
from clipmath.errors import CaptionError
from tests.conftest import GALLERY

PHOTOS = ["skimage/coffee.png", "skimage/chelsea.png", "coco/COCO_val2014_000000557731.jpg"]


@pytest.fixture(scope="module")
def tiny_lm():
    return load_language_model("tiny-random-lm")


@pytest.fixture(scope="module")
def smollm2():
    return load_language_model("smollm2-135m")


@pytest.fixture(scope="module")
def photo_targets(offline_encoder):
    return offline_encoder.encode_images([Image.open(GALLERY / p) for p in PHOTOS])


def test_decoding_is_deterministic_and_reports_time_and_progress(tiny_lm, tiny_encoder):
    target = tiny_encoder.encode_texts(["a photo of a cat"])[0]
    config = MagicConfig(max_length=6, k=8)
    ticks = []
    first = MagicDecoder(tiny_lm, tiny_encoder).caption(
        target, config, progress=lambda done, total: ticks.append((done, total))
    )
    second = DECODERS.get("magic").create(tiny_lm, tiny_encoder, config).caption(target)
    assert [(c.tokens, c.clip_score, c.lm_score) for c in first] == [
        (c.tokens, c.clip_score, c.lm_score) for c in second
    ]
    assert len(first) == 1 and 1 <= len(first[0].tokens) <= 6 and first[0].seconds > 0
    assert ticks == [(i + 1, 6) for i in range(len(first[0].tokens))]
    expected = tiny_encoder.encode_texts([first[0].text])[0] @ (target / np.linalg.norm(target))
    assert first[0].clip_score == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.slow
def test_max_length_and_end_token_stop_a_caption(smollm2, offline_encoder, photo_targets):
    decoder = MagicDecoder(smollm2, offline_encoder)
    free = decoder.caption(photo_targets[0], MagicConfig(max_length=10, end_token="\t"))[0].tokens
    assert len(free) == 10  # nothing stops it: "\t" is never chosen here
    cut = decoder.caption(photo_targets[0], MagicConfig(max_length=3, end_token="\t"))[0].tokens
    assert cut == free[:3]
    # End on a token the free-running caption reaches later: decoding stops right after it, same tokens before.
    position = next(
        i
        for i in range(1, len(free))
        if free[i] not in free[:i] and smollm2.encode(smollm2.decode([free[i]])) == [free[i]]
    )
    end = smollm2.decode([free[position]])
    ended = decoder.caption(photo_targets[0], MagicConfig(max_length=10, end_token=end))[0]
    assert ended.tokens == free[: position + 1]


@pytest.mark.slow
def test_guidance_raises_the_target_score_over_plain_lm_decoding(smollm2, offline_encoder, photo_targets):
    decoder = MagicDecoder(smollm2, offline_encoder)
    gains = []
    for photo, target in zip(PHOTOS, photo_targets):
        plain = decoder.caption(target, MagicConfig(alpha=0.0, beta=0.0))[0]  # greedy LM decoding, same prompt
        guided = decoder.caption(target)[0]
        assert guided.clip_score > plain.clip_score, (photo, guided, plain)
        gains.append(guided.clip_score - plain.clip_score)
    assert np.mean(gains) > 0.1, gains


def test_any_target_vector_and_bad_ones(tiny_lm, tiny_encoder):
    a, b = tiny_encoder.encode_texts(["a red car", "a blue car"])
    decoder = MagicDecoder(tiny_lm, tiny_encoder, MagicConfig(max_length=3, k=4))
    assert decoder.caption(torch.as_tensor(a - b))[0].tokens  # a difference of two embeddings, as a tensor
    with pytest.raises(CaptionError, match="32-d"):
        decoder.caption(np.ones(5, dtype=np.float32))
    with pytest.raises(CaptionError, match="zero"):
        decoder.caption(np.zeros(32, dtype=np.float32))
    with pytest.raises(CaptionError, match="alpha"):
        MagicConfig(alpha=2.0)
    with pytest.raises(CaptionError, match="unknown magic option"):
        DECODERS.get("magic").make_options(beam_size=3)


def test_defaults_are_magic_mscoco_settings():
    c = MagicConfig()
    assert (c.k, c.alpha, c.beta, c.max_length, c.end_token) == (45, 0.1, 2.0, 16, ".")


def test_target_follows_the_lm_device(tiny_lm, tiny_encoder, monkeypatch):
    from clipmath.caption import decoders, magic

    seen = []

    def spy(vector, encoder, device):
        seen.append(device)
        return decoders.target_tensor(vector, encoder, torch.device("cpu"))

    monkeypatch.setattr(magic, "target_tensor", spy)
    MagicDecoder(tiny_lm, tiny_encoder, MagicConfig(max_length=2, k=4)).caption(tiny_encoder.encode_texts(["x"])[0])
    assert seen == [tiny_lm.device]


def test_caption_command_with_the_magic_decoder():
    import json

    from typer.testing import CliRunner

    from clipmath.cli import app

    args = ["caption", "--image", str(GALLERY / "skimage/chelsea.png"), "--lm", "tiny-random-lm"]
    args += ["--model", "tiny-random-clip", "--decoder", "magic", "--max-length", "4", "--top-k", "5", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["decoder"] == "magic" and payload["config"]["k"] == 5 and payload["seconds"] > 0
    assert len(payload["captions"]) == 1 and payload["captions"][0]["text"].startswith("Image of a")
    bad = CliRunner().invoke(app, [*args[:-1], "--decoder", "magik"])
    assert bad.exit_code != 0
