"""The pair encoder, both CLIP4IDC training stages, checkpoints and the difference-caption API on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipmath.caption.difference import (
    TrainedDifferenceCaptioner,
    caption_difference,
    difference_vector,
    open_pair,
)
from clipmath.data.change_set import build_change_set_clip, make_change_set
from clipmath.data.clevr_change import load_clevr_change
from clipmath.encoders import load_encoder
from clipmath.encoders.pair import PairEncoderError, make_pair_encoder
from clipmath.errors import CaptionError, ClipmathError
from clipmath.train.idc import (
    IdcAdaptConfig,
    IdcCaptionConfig,
    adapt_task_factory,
    caption_task_factory,
    pair_text_recalls,
    retrieval_validator,
)
from clipmath.train.loop import TrainingError, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def word_encoder(tmp_path_factory):
    return load_encoder(str(build_change_set_clip(tmp_path_factory.mktemp("clip") / "clip", dim=32, layers=1)))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = make_change_set(tmp_path_factory.mktemp("cs"), pairs=12, seed=0, image_size=64)
    return load_clevr_change(root, "train").pairs, load_clevr_change(root, "val").pairs


def _pixels(encoder, pairs):
    befores, afters = zip(*(open_pair(p.before, p.after) for p in pairs))
    return encoder.load_images(list(befores)), encoder.load_images(list(afters))


def test_swapping_before_and_after_changes_the_pair_embedding(tiny_encoder, pairs) -> None:
    pair = make_pair_encoder(tiny_encoder).eval()
    before, after = _pixels(tiny_encoder, pairs[0][:3])
    with torch.no_grad():
        forward, backward = pair(before, after), pair(after, before)
    assert forward.embedding.shape == (3, tiny_encoder.dim)
    patches = (32 // 8) ** 2
    assert forward.hidden_states.shape == (3, 2 * (1 + patches), 32)
    assert not torch.allclose(forward.embedding, backward.embedding, atol=1e-4)
    # the encoder's own weights are copied, not shared: training the pair encoder leaves it alone
    assert pair.clip is not tiny_encoder.model


def test_offline_model_is_refused_with_one_line(offline_encoder) -> None:
    with pytest.raises(PairEncoderError, match="vision transformer"):
        make_pair_encoder(offline_encoder)


def test_recalls_count_any_caption_of_the_pair() -> None:
    pairs = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1], [0, 1, 0]])
    owner = [0, 1, 2, 1]  # pair 1's first caption looks like pair 0's
    metrics = pair_text_recalls(pairs, torch.nn.functional.normalize(texts, dim=-1), owner, ks=(1, 2))
    assert metrics["pair->text R@1"] == 1.0  # pair 1 finds its second caption first
    assert metrics["text->pair R@1"] == 0.75 and metrics["text->pair R@2"] == 1.0


def test_both_stages_train_resume_bit_identically_and_reload(word_encoder, pairs, tmp_path: Path) -> None:
    train, val = pairs
    adapt = IdcAdaptConfig(epochs=4, batch_size=6, lr=2e-3, coef_lr=1.0, progress=False)
    first = fit(adapt_task_factory(word_encoder, train), adapt, tmp_path / "adapt", retrieval_validator(val))
    assert first.last_loss < first.first_loss
    assert set(first.final_metrics) >= {"pair->text R@1", "text->pair R@10"}

    caption = IdcCaptionConfig(
        epochs=2, batch_size=6, lr=2e-3, coef_lr=1.0, init_from=str(tmp_path / "adapt"), progress=False
    )
    whole = fit(caption_task_factory(word_encoder, train), caption, tmp_path / "whole")
    assert whole.last_loss < whole.first_loss
    # stage 2 started from stage 1's pair encoder
    adapted = load_file(str(tmp_path / "adapt" / "weights.safetensors"))
    assert not torch.equal(adapted["segment.weight"], make_pair_encoder(word_encoder).segment.weight)

    from dataclasses import replace

    fit(caption_task_factory(word_encoder, train), replace(caption, epochs=1), tmp_path / "split")
    fit(caption_task_factory(word_encoder, train), caption, tmp_path / "split")  # resumes for epoch 2
    a = load_file(str(tmp_path / "whole" / "weights.safetensors"))
    b = load_file(str(tmp_path / "split" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    captioner = TrainedDifferenceCaptioner.load(tmp_path / "whole", word_encoder)
    reloaded = captioner.model.state_dict()
    assert all(torch.equal(reloaded[k].cpu(), a[k]) for k in a)
    text = caption_difference(val[0].before, val[0].after, checkpoint=captioner)
    assert text.mode == "trained" and isinstance(text.text, str)
    assert text.text == whole.task.describe([val[0]])[0]
    from types import SimpleNamespace

    from clipmath.caption.difference import difference_fn

    server_fn = difference_fn(tmp_path / "whole", word_encoder)  # what the server's captioner calls
    subjects = [SimpleNamespace(image=Image.open(path).convert("RGB")) for path in (val[0].before, val[0].after)]
    assert server_fn(*subjects) == text.text

    with pytest.raises(CaptionError, match="idc-adapt"):
        TrainedDifferenceCaptioner.load(tmp_path / "adapt", word_encoder)
    with pytest.raises(ClipmathError, match="trained on model"):
        TrainedDifferenceCaptioner.load(tmp_path / "whole", load_encoder("tiny-random-clip"))
    with pytest.raises(ClipmathError, match="idc-adapt"):
        fit(
            caption_task_factory(word_encoder, train),
            replace(caption, init_from=str(tmp_path / "whole")),
            tmp_path / "bad",
            resume=False,
        )
    with pytest.raises(TrainingError, match="idc-caption"):
        fit(adapt_task_factory(word_encoder, train), adapt, tmp_path / "whole")  # another kind in the output


def test_bad_image_inputs_give_one_line_errors(tiny_encoder, pairs, tmp_path: Path) -> None:
    before = pairs[0][0].before
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(CaptionError, match="after"):
        open_pair(before, corrupt)
    with pytest.raises(CaptionError, match="not found"):
        open_pair(tmp_path / "missing.png", before)
    # another size: the "after" image is resized to the "before" size
    big = tmp_path / "big.png"
    Image.open(pairs[0][0].after).resize((100, 90)).save(big)
    first, second = open_pair(before, big)
    assert first.size == second.size
    # identical images: nothing to follow, and the zero-shot caption says so without a model
    with pytest.raises(CaptionError, match="identical"):
        difference_vector(tiny_encoder, before, before)
    same = caption_difference(before, before, encoder=tiny_encoder, lm=object())
    assert same.mode == "identical" and same.text == "no change"
    with pytest.raises(CaptionError, match="language model"):
        caption_difference(before, pairs[0][0].after, encoder=tiny_encoder)


def test_difference_vector_moves_a_reference(tiny_encoder, pairs) -> None:
    pair = pairs[0][0]
    direction = difference_vector(tiny_encoder, pair.before, pair.after)
    assert direction.shape == (tiny_encoder.dim,) and abs(float((direction**2).sum()) - 1) < 1e-5
    reference = tiny_encoder.encode_images([Image.open(pair.before)])[0]
    moved = difference_vector(tiny_encoder, pair.before, pair.after, reference=reference, lam=0.5)
    assert float(moved @ direction) > float(reference @ direction)
    with pytest.raises(CaptionError, match="-d"):
        difference_vector(tiny_encoder, pair.before, pair.after, reference=reference[:5])
