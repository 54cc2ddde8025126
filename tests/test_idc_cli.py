"""The difference-captioning front end: make-change-set, train idc (both stages), diff-caption, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipmath.cli import app, main
from clipmath.data.change_set import build_change_set_clip

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def _ok(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_make_train_and_caption_from_the_command_line(tmp_path: Path) -> None:
    made = _ok(["data", "make-change-set", str(tmp_path / "cs"), "--pairs", "8", "--seed", "1", "--json"])
    assert made["ids"] == 8 and sum(made["splits"].values()) == 8
    model = str(build_change_set_clip(tmp_path / "clip", dim=32, layers=1))
    common = [
        "--path",
        str(tmp_path / "cs"),
        "--model",
        model,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--coef-lr",
        "1",
        "--json",
    ]
    adapt = _ok(["train", "idc-adapt", "-o", str(tmp_path / "adapt"), *common])
    assert "text->pair R@1" in adapt["runs"][0]["history"][-1]["metrics"]
    caption = _ok(
        [
            "train",
            "idc-caption",
            "-o",
            str(tmp_path / "cap"),
            "--init-from",
            str(tmp_path / "adapt"),
            *common,
        ]
    )
    assert "CIDEr" in caption["runs"][0]["history"][-1]["metrics"]
    before = tmp_path / "cs" / "images" / "CLEVR_default_000000.png"
    after = tmp_path / "cs" / "sc_images" / "CLEVR_semantic_000000.png"
    result = runner.invoke(app, ["diff-caption", str(before), str(after), "--checkpoint", str(tmp_path / "cap")])
    assert "model folder" in str(result.exception)  # a folder-trained checkpoint needs its folder named
    described = _ok(
        ["diff-caption", str(before), str(after), "--checkpoint", str(tmp_path / "cap"), "--model", model, "--json"]
    )
    assert described["mode"] == "trained" and isinstance(described["text"], str)
    assert "RANDOM WEIGHTS" in described["model"]
    evaluated = _ok(
        [
            "eval",
            "--dataset",
            "clevr-change",
            "--path",
            str(tmp_path / "cs"),
            "--split",
            "val",
            "--checkpoint",
            str(tmp_path / "cap"),
            "--model",
            model,
            "--json",
        ]
    )
    (row,) = evaluated["results"]
    assert row["method"] == "clip4idc" and row["queries"] == 2 * made["splits"]["val"]
    assert {"overall/CIDEr", "change/CIDEr", "no-change/BLEU-4", "distractor/ROUGE-L"} <= set(row["metrics"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diff-caption", "{tmp}/a.png", "{tmp}/corrupt.png", "--checkpoint", "{tmp}"], "idc-caption"),
        (
            ["diff-caption", "{tmp}/a.png", "{tmp}/nope.png", "--model", "tiny-random-clip", "--lm", "tiny-random-lm"],
            "not found",
        ),
        (
            [
                "diff-caption",
                "{tmp}/a.png",
                "{tmp}/corrupt.png",
                "--model",
                "tiny-random-clip",
                "--lm",
                "tiny-random-lm",
            ],
            "cannot read the 'after' image",
        ),
        (["train", "idc-adapt", "-o", "{tmp}/o", "--path", "{tmp}", "--dataset", "cirr"], "--dataset is a difference"),
        (
            ["train", "idc-adapt", "-o", "{tmp}/o", "--path", "{tmp}", "--model", "tiny-random-clip"],
            "change_captions.json is missing",
        ),
    ],
)
def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message) -> None:
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "clipmath.json").write_text(
        json.dumps({"format": 1, "kind": "adapter", "model_id": "x", "dim": 2, "preprocessing": "clip", "config": {}})
    )
    monkeypatch.setattr("sys.argv", ["clipmath"] + [a.format(tmp=tmp_path) for a in args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    last = captured.err.splitlines()[-1]
    assert last.startswith("error: ") and message in last, captured.err
    assert "Traceback" not in captured.err


def test_eval_captions_takes_coco_predictions_with_a_reference_file(tmp_path: Path) -> None:
    references = Path(__file__).parent / "data" / "idc" / "clip4idc-gt" / "spot_total_change_captions_reformat.json"
    coco = json.loads(references.read_text())
    refs: dict[str, list[str]] = {}
    for annotation in coco["annotations"]:
        refs.setdefault(annotation["image_id"], []).append(annotation["caption"])
    ids = list(refs)[:30]
    (tmp_path / "coco.json").write_text(json.dumps([{"image_id": i, "caption": refs[i][0]} for i in ids]))
    (tmp_path / "own.json").write_text(json.dumps([{"prediction": refs[i][0], "references": refs[i]} for i in ids]))
    coco_scores = _ok(
        ["eval-captions", str(tmp_path / "coco.json"), "--references", str(references), "--no-meteor", "--json"]
    )
    own_scores = _ok(["eval-captions", str(tmp_path / "own.json"), "--no-meteor", "--json"])
    assert coco_scores == own_scores and coco_scores["count"] == 30 and coco_scores["percent"]["CIDEr"] > 100


def test_train_idc_over_seeds_reports_mean_and_std(tmp_path: Path) -> None:
    _ok(["data", "make-change-set", str(tmp_path / "cs"), "--pairs", "6", "--json"])
    model = str(build_change_set_clip(tmp_path / "clip", dim=32, layers=1))
    report = _ok(
        [
            "train",
            "idc-adapt",
            "-o",
            str(tmp_path / "runs"),
            "--path",
            str(tmp_path / "cs"),
            "--model",
            model,
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--seeds",
            "1",
            "2",
            "--json",
        ]
    )
    assert [run["seed"] for run in report["runs"]] == [1, 2]
    assert (tmp_path / "runs" / "seed-2" / "clipmath.json").is_file()
    summary = report["summary"]
    assert {"text->pair R@1", "loss"} <= set(summary) and summary["loss"]["n"] == 2 and summary["loss"]["std"] > 0
