"""DeCap: text-only training on the shared loop (loss falls, checkpoint reloads equal, resume is bit-identical) and
the `decap` decoder (the encoder check, memory projection). Tiny random encoder: plumbing, not quality."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from clipmath.caption import DECODERS
from clipmath.caption.decap import DecapDecoder, DecapOptions, TrainedDecap
from clipmath.errors import CaptionError, ModelLoadError
from clipmath.train.decap import DecapConfig, train_decap

pytestmark = pytest.mark.usefixtures("one_thread")

SUBJECTS = ["a man", "a woman", "a dog", "a cat", "two boys", "a girl"]
ACTIONS = ["riding a bike", "sitting on a bench", "eating a pizza", "walking in the snow", "holding a kite"]
PLACES = ["in a park.", "on a street.", "near the beach.", "at home."]
TEXTS = [f"{s} {a} {p}" for s in SUBJECTS for a in ACTIONS for p in PLACES]  # 120 captions
SMALL = dict(
    epochs=3,
    batch_size=16,
    lr=3e-3,
    width=32,
    layers=1,
    heads=2,
    max_tokens=12,
    dropout=0.0,
    validation_captions=0,
    progress=False,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_falls_and_the_reloaded_checkpoint_equals_the_trained_decoder(tiny_encoder, corpus, tmp_path):
    result = train_decap(tiny_encoder, corpus, DecapConfig(**{**SMALL, "validation_captions": 12}), tmp_path / "run")
    losses = [epoch["loss"] for epoch in result.history]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    held = set(result.task.held_rows.tolist())
    assert len(held) == 12 and len(result.task.memory) == len(TEXTS) - 12  # held-out captions: not in the memory
    assert not {TEXTS[i] for i in held} & set(result.task.memory.texts)
    if shutil.which("java"):  # per-epoch validation: held-out captions through projection and decoding
        assert all(0 <= epoch["metrics"]["CIDEr"] for epoch in result.history)
    trained = result.task.model
    loaded = TrainedDecap.load(tmp_path / "run", tiny_encoder)
    for name, tensor in weights(trained).items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert loaded.corpus["count"] == len(TEXTS) and loaded.corpus["path"].endswith("captions.txt")
    prefixes = torch.from_numpy(tiny_encoder.encode_texts(TEXTS[:4]))
    assert loaded.generate(prefixes) == result.task.describe(prefixes)
    assert loaded.generate(prefixes, beam_size=3)[0].split()[0] in {"a", "two"}


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_encoder, corpus, tmp_path):
    config = DecapConfig(**{**SMALL, "epochs": 2, "noise_variance": 0.016, "dropout": 0.1})
    straight = train_decap(tiny_encoder, corpus, config, tmp_path / "straight")
    train_decap(tiny_encoder, corpus, dataclasses.replace(config, epochs=1), tmp_path / "resumed")
    resumed = train_decap(tiny_encoder, corpus, config, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 1
    for name, tensor in weights(straight.task.model).items():
        assert torch.equal(resumed.task.model.state_dict()[name], tensor), name
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in straight.history]


def test_the_decoder_projects_onto_the_memory_and_refuses_another_encoder(tiny_encoder, corpus, tmp_path, monkeypatch):
    from clipmath.encoders import load_encoder

    train_decap(tiny_encoder, corpus, DecapConfig(**{**SMALL, "epochs": 1}), tmp_path / "run")
    spec = DECODERS.get("decap")
    decoder = spec.create(None, tiny_encoder, checkpoint=str(tmp_path / "run"))  # memory: the recorded corpus
    assert isinstance(decoder, DecapDecoder) and len(decoder.memory) == len(TEXTS)
    target = tiny_encoder.encode_texts(["a dog riding a bike"])[0]
    captions = decoder.caption(target)
    assert len(captions) == 1 and captions[0].text and captions[0].lm_score < 0
    expected = decoder.trained.generate(decoder.memory.project(torch.from_numpy(target), 0.01)[None])[0]
    assert captions[0].text == expected
    # without projection the raw target is decoded (CapDec's inference)
    raw = decoder.caption(target, DecapOptions(checkpoint=str(tmp_path / "run"), projection=False))[0].text
    assert raw == decoder.trained.generate(torch.from_numpy(target)[None])[0]
    # decoding runs on decoder_threads (default 1) and gives the caller's thread count back; 0 leaves it alone
    calls, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n))[1])
    real(2)
    assert decoder.caption(target)[0].text == expected and calls == [1, 2] and torch.get_num_threads() == 2
    decoder.caption(target, DecapOptions(checkpoint=str(tmp_path / "run"), decoder_threads=0))
    assert calls == [1, 2]
    with pytest.raises(ModelLoadError, match="trained on"):
        spec.create(None, load_encoder("tiny-random-clip:7"), checkpoint=str(tmp_path / "run"))
    with pytest.raises(CaptionError, match="checkpoint"):
        spec.create(None, tiny_encoder)
    corpus.unlink()
    with pytest.raises(CaptionError, match="corpus"):
        spec.create(None, tiny_encoder, checkpoint=str(tmp_path / "run"))
    assert np.isfinite(captions[0].clip_score)


def test_train_decap_and_caption_with_it_from_the_command_line(corpus, tmp_path):
    import json

    from typer.testing import CliRunner

    from clipmath.cli import app
    from tests.conftest import GALLERY

    run = tmp_path / "run"
    small = ["--epochs", "1", "--batch-size", "16", "--width", "32", "--layers", "1", "--heads", "2"]
    trained = CliRunner().invoke(
        app, ["train", "decap", "--texts", str(corpus), "-o", str(run), "--model", "tiny-random-clip", *small, "--json"]
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["runs"][0]["checkpoint"]
    image = str(GALLERY / "arithmetic" / "king2.jpg")
    args = ["caption", "--image", image, "--decoder", "decap", "--checkpoint", str(run), "--model", "tiny-random-clip"]
    captioned = CliRunner().invoke(app, [*args, "--json"])
    assert captioned.exit_code == 0, captioned.output
    payload = json.loads(captioned.stdout)
    assert payload["decoder"] == "decap" and payload["language_model"] == "none" and payload["captions"][0]["text"]
    bad = CliRunner().invoke(app, ["train", "decap", "--texts", str(corpus), "-o", str(run), "--heads", "0"])
    assert "--heads must be at least 1" in str(bad.exception) and "model:" not in bad.output  # before any model


def test_diff_caption_zero_shot_with_the_memory_and_decap_decoders(tiny_encoder, corpus, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from clipmath.caption.difference import difference_vector
    from clipmath.caption.memory import CaptionMemory
    from clipmath.cli import app
    from tests.conftest import GALLERY

    def no_language_model(*args, **kwargs):
        raise AssertionError("a decoder without a language model loaded one")

    monkeypatch.setattr("clipmath.caption.load_language_model", no_language_model)
    before, after = (str(GALLERY / "arithmetic" / name) for name in ("man2.jpg", "king2.jpg"))
    common = ["diff-caption", before, after, "--model", "tiny-random-clip", "--json"]

    def run(*args: str) -> dict:
        result = CliRunner().invoke(app, [*common, *args])
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout)

    # memory: the corpus caption nearest to after − before (computed here independently)
    memory = run("--decoder", "memory", "--corpus", str(corpus))
    direction = difference_vector(tiny_encoder, before, after)
    expected = CaptionMemory.build(TEXTS, tiny_encoder, "toy").nearest(direction, k=1)[0][0]
    assert memory["mode"] == "zero-shot" and memory["text"] == expected
    assert "zero-shot memory (no language model)" in memory["model"]
    # the weights reach the difference: before − after points elsewhere than after − before
    reverse = difference_vector(tiny_encoder, before, after, weights=(-1.0, -1.0))
    flipped = run("--decoder", "memory", "--corpus", str(corpus), "--before-weight", "-1", "--after-weight", "-1")
    assert flipped["text"] == CaptionMemory.build(TEXTS, tiny_encoder, "toy").nearest(reverse, k=1)[0][0]

    # decap: --checkpoint is the DeCap checkpoint when --decoder decap is given; decoder options pass through
    train_decap(tiny_encoder, corpus, DecapConfig(**SMALL), tmp_path / "run")
    decap = run("--decoder", "decap", "--checkpoint", str(tmp_path / "run"), "--beam-size", "2")
    assert decap["mode"] == "zero-shot" and decap["text"] and "zero-shot decap (no language model)" in decap["model"]
    options = DecapOptions(checkpoint=str(tmp_path / "run"), beam_size=2)
    expected = DecapDecoder(None, tiny_encoder, options).caption(direction)[0].full_text
    assert decap["text"] == expected

    # options of another decoder, or decoder options beside a CLIP4IDC checkpoint: one-line user errors
    wrong = CliRunner().invoke(app, [*common, "--decoder", "memory", "--corpus", str(corpus), "--beam-size", "2"])
    assert wrong.exit_code != 0 and "--beam-size does not apply to the nearest caption decoder" in str(wrong.exception)
    mixed = CliRunner().invoke(app, [*common, "--checkpoint", str(tmp_path), "--corpus", str(corpus)])
    assert mixed.exit_code != 0 and "takes no --decoder nor decoder options" in str(mixed.exception)
