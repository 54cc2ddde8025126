"""CLIP4IDC learns on the generated change set: its captions of held-out pairs beat the constant baseline (the most
frequent training caption) and zero-shot captions by CIDEr. Random-weight models: a learning check, not quality."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipmath.data.change_set import build_change_set_clip, make_change_set
from clipmath.data.clevr_change import load_clevr_change
from clipmath.encoders import load_encoder
from clipmath.eval.difference import caption_pairs, most_frequent_caption, score_difference_captions
from clipmath.train.idc import (
    IdcAdaptConfig,
    IdcCaptionConfig,
    adapt_task_factory,
    caption_task_factory,
    retrieval_validator,
)
from clipmath.train.loop import fit

pytestmark = pytest.mark.usefixtures("one_thread")

SCENES = 1000  # ids: 1,400 training pairs (change + distractor), 200 test pairs
CAPTION_EPOCHS = 60


@pytest.mark.slow
def test_trained_captioner_beats_constant_and_zero_shot_captions(tmp_path: Path) -> None:
    root = make_change_set(tmp_path / "cs", pairs=SCENES, seed=0, image_size=64)
    train = load_clevr_change(root, "train").pairs
    test = load_clevr_change(root, "test").pairs[:100]
    encoder = load_encoder(str(build_change_set_clip(tmp_path / "clip", dim=64, layers=2)))

    adapt = IdcAdaptConfig(epochs=2, batch_size=32, lr=3e-4, coef_lr=1.0, progress=False)
    stage1 = fit(adapt_task_factory(encoder, train), adapt, tmp_path / "adapt", retrieval_validator(test[:40]))
    assert stage1.last_loss < stage1.first_loss

    caption = IdcCaptionConfig(
        epochs=CAPTION_EPOCHS,
        batch_size=32,
        lr=3e-4,
        coef_lr=1.0,
        dropout=0.0,
        init_from=str(tmp_path / "adapt"),
        progress=False,
    )
    stage2 = fit(caption_task_factory(encoder, train), caption, tmp_path / "caption")
    assert stage2.last_loss < 0.5 * stage2.first_loss

    trained = score_difference_captions(caption_pairs(stage2.task.describe, test), test, meteor=False)
    constant = most_frequent_caption(train)
    baseline = score_difference_captions({p.pair_id: constant for p in test}, test, meteor=False)
    zero_shot = _zero_shot_scores(encoder, test[:12])
    print("\ntrained:\n" + trained.markdown() + "\nconstant '" + constant + "':\n" + baseline.markdown())
    print(f"zero-shot CIDEr on the first 12 pairs: {zero_shot:.3f}")

    assert trained.overall.cider > 1.2 * baseline.overall.cider
    assert trained.overall.cider > zero_shot + 0.5
    # it says something right about changes, not only "no change"
    assert trained.groups["change"].cider > 2 * baseline.groups["change"].cider + 0.05


def _zero_shot_scores(encoder, pairs) -> float:
    from clipmath.caption import load_language_model
    from clipmath.caption.difference import zero_shot_difference
    from clipmath.caption.metrics import caption_metrics
    from clipmath.errors import CaptionError

    lm = load_language_model("tiny-random-lm")
    options = {"beam_size": 2, "target_seq_length": 6}
    try:
        captions = [zero_shot_difference(p.before, p.after, encoder, lm, **options).text for p in pairs]
    except CaptionError:  # the registered decoder has other option names: its defaults
        captions = [zero_shot_difference(p.before, p.after, encoder, lm).text for p in pairs]
    return caption_metrics(captions, [list(p.captions) for p in pairs], meteor=False).cider
