"""COCO caption metrics: the published ZeroCap MSCOCO scores, properties of the metrics, input-file errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipmath.caption import metrics
from clipmath.caption.metrics import caption_metrics, read_caption_file, score_caption_file
from clipmath.errors import CaptionError

DATA = Path(__file__).parent / "data" / "caption-metrics"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the COCO caption evaluation needs Java")

# MAGIC paper (Su et al. 2022), Table 1, ZeroCap on MSCOCO, to the two decimals the evaluation prints.
PUBLISHED_ZEROCAP_MSCOCO = {"BLEU-1": 49.79, "BLEU-4": 6.98, "METEOR": 15.43, "ROUGE-L": 31.80, "CIDEr": 34.47}


@needs_java
@pytest.mark.slow
def test_reproduces_the_published_zerocap_mscoco_scores():
    scores = score_caption_file(DATA / "zerocap_mscoco_result.json")
    assert scores.count == 5000
    got = scores.percent()
    for name, published in PUBLISHED_ZEROCAP_MSCOCO.items():
        assert round(got[name], 2) == pytest.approx(published, abs=1e-9), (name, got[name])


@needs_java
def test_metrics_rank_a_matching_caption_above_an_unrelated_one():
    refs = [
        ["A cat sleeps on a red sofa.", "a cat lying on a couch"],
        ["A man rides a horse on a beach.", "a rider on a horse"],
    ]
    # METEOR is left to the reproduction test above: each METEOR run starts a JVM that loads paraphrase tables.
    good = caption_metrics(["a cat sleeping on a red sofa.", "a man riding a horse on the beach."], refs, meteor=False)
    bad = caption_metrics(["a plate of food with a fork.", "a bus parked in a street."], refs, meteor=False)
    for name, value in good.as_dict().items():
        if name != "METEOR":
            assert value > bad.as_dict()[name], name
    assert good.meteor is None and good.cider > 1.0


@needs_java
def test_ptb_tokenisation_ignores_case_and_punctuation():
    refs = [["a dog runs in the park", "the dog is running"]]
    plain = caption_metrics(["a dog runs in the park"], refs, meteor=False)
    noisy = caption_metrics(["A Dog runs, in the park!"], refs, meteor=False)
    assert noisy.as_dict() == plain.as_dict()
    assert plain.bleu1 == pytest.approx(1.0) and plain.meteor is None


@needs_java
def test_list_and_mapping_files_score_the_same(tmp_path):
    items = json.loads((DATA / "zerocap_mscoco_result.json").read_text())[:20]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(items))
    as_map = tmp_path / "map.json"
    as_map.write_text(
        json.dumps({it["image_name"]: {"prediction": it["prediction"], "references": it["captions"]} for it in items})
    )
    assert score_caption_file(as_list, meteor=False) == score_caption_file(as_map, meteor=False)
    assert [it.key for it in read_caption_file(as_list)] == [it["image_name"] for it in items]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('"a string"', "expected a JSON list"),
        ("[]", "holds no items"),
        ('[{"captions": ["a cat"]}]', "no 'prediction'"),
        ('[{"prediction": "a cat"}]', "no 'references'"),
        ('[{"prediction": "a cat", "references": "a cat"}]', "non-empty list of strings"),
        ('[{"prediction": "a cat", "captions": []}]', "non-empty list of strings"),
        ('{"x": ["a cat"]}', "is not an object"),
    ],
)
def test_malformed_caption_files_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "preds.json"
    path.write_text(content)
    with pytest.raises(CaptionError, match=message):
        score_caption_file(path)


def test_missing_file_and_mismatched_lists_raise_clear_errors(tmp_path):
    with pytest.raises(CaptionError, match="not found"):
        score_caption_file(tmp_path / "absent.json")
    with pytest.raises(CaptionError, match="2 predictions but 1"):
        caption_metrics(["a", "b"], [["a"]])


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(CaptionError, match="need Java"):
        caption_metrics(["a cat"], [["a cat on a mat"]])
