"""`clipmath train …` end to end on the tiny model: every option documented, each command writes a checkpoint that
`clipmath search --method … --checkpoint` uses, `--seeds` reports mean ± std, and mistakes are one-line errors."""

from __future__ import annotations

import json

import click
import pytest
import typer
from typer.testing import CliRunner

from clipmath.cli import app, main
from clipmath.options import field_meta, settings_fields
from clipmath.train import TRAINERS, RunOptions
from clipmath.train.synthetic import make_shapes_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()
TINY = ["--model", "tiny-random-clip", "--quiet"]


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-train")
    shapes = make_shapes_dataset(root / "images", shapes=3, colours=3, instances=2, size=32)
    rows = lambda triplets: [  # noqa: E731
        {"reference": t.reference.name, "caption": t.caption, "target": t.target.name} for t in triplets
    ]
    (root / "images" / "train.json").write_text(json.dumps(rows(shapes.triplets(range(1)))))
    (root / "images" / "val.json").write_text(json.dumps(rows(shapes.triplets(range(1, 2)))))
    lines = [f"{item.path.name}\t{c}" for item in shapes.captioned() for c in item.captions]
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")
    store = root / "store"
    result = runner.invoke(app, ["index", str(root / "images"), "--store", str(store), "--model", "tiny-random-clip"])
    assert result.exit_code == 0, result.output
    return root, shapes, store


@pytest.mark.parametrize("name", TRAINERS.names())
def test_help_documents_every_option(name):
    command = train_command(name)
    result = runner.invoke(app, ["train", name, "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and param.help.strip(), f"{name} {param.opts} has no help"
            assert param.opts[0] in result.output


def train_command(name: str) -> click.Command:
    group = typer.main.get_command(app).get_command(None, "train")
    return group.get_command(None, name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", TRAINERS.names())
def test_every_setting_is_an_option_with_the_dataclass_default(name):
    spec = TRAINERS.get(name)
    params = {param.name: param for param in train_command(name).params}
    for cls in (spec.inputs, spec.config, RunOptions):
        defaults = cls() if cls is not RunOptions else RunOptions(output="x")
        for item in settings_fields(cls):
            if (item.name == "seeds" and not spec.seeds) or (item.name == "cache" and not spec.encoder):
                assert item.name not in params
                continue
            assert item.name in params, f"{name}: {cls.__name__}.{item.name} has no option"
            if field_meta(cls, item.name).get("required"):
                assert params[item.name].required
            elif item.name != "output":
                assert params[item.name].default == getattr(defaults, item.name), (name, item.name)
    settings = {f.name for cls in (spec.inputs, spec.config) for f in settings_fields(cls)}
    unexplained = set(params) - settings - {f.name for f in settings_fields(RunOptions)} - {
        "val_triplets", "val_images", "val_gallery", "val_dataset", "val_path", "val_split", "model", "preprocessing",
        "threads", "quiet", "as_json"}  # fmt: skip
    assert not unexplained, f"{name}: options that are no setting: {unexplained}"


def test_every_learned_method_names_a_registered_trainer():
    from clipmath.compose import METHODS

    for spec in METHODS.list():
        if spec.learned:
            assert spec.train_command in TRAINERS, f"{spec.name}: train_command {spec.train_command!r}"


def test_a_setting_out_of_its_bounds_is_one_line_naming_the_flag(data, tmp_path, capsys, monkeypatch):
    root, _, _ = data
    monkeypatch.setattr("sys.argv", ["clipmath", "train", "combiner", "-o", str(tmp_path / "x"), "--triplets",
                                     str(root / "images" / "train.json"), "--lr", "nan", *TINY])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --lr must be a finite number, not nan"


def test_combiner_train_validate_and_search(data):
    root, shapes, store = data
    out = root / "combiner"
    report = invoke_json(
        "train", "combiner", "--triplets", str(root / "images" / "train.json"), "--output", str(out),
        "--val-triplets", str(root / "images" / "val.json"), "--epochs", "3", "--batch-size", "8",
        "--lr", "1e-3", "--projection-dim", "16", "--hidden-dim", "32", *TINY,
    )  # fmt: skip
    assert "RANDOM WEIGHTS" in report["model"]
    history = report["runs"][0]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and "recall@1" in history[-1]["metrics"]
    assert report["runs"][0]["examples_per_s"] > 0
    reference = str(shapes.path("circle", "red", 1))
    hits = invoke_json("search", "--store", str(store), "--image", reference, "--text", "is blue",
                       "--method", "combiner", "--checkpoint", str(out), "-k", "3")  # fmt: skip
    assert hits["method"] == "combiner" and len(hits["results"]) == 3
    assert "circle_red_1.png" not in [h["id"] for h in hits["results"]]


def test_seeds_give_mean_and_std(data):
    root, _, _ = data
    out = root / "seeds"
    report = invoke_json(
        "train", "combiner", "--triplets", str(root / "images" / "train.json"), "--output", str(out),
        "--val-triplets", str(root / "images" / "val.json"), "--epochs", "1", "--batch-size", "8",
        "--projection-dim", "8", "--hidden-dim", "8", "--seeds", "1", "2", "3", *TINY,
    )  # fmt: skip
    assert [r["seed"] for r in report["runs"]] == [1, 2, 3]
    summary = report["summary"]
    assert list(summary)[0] == "recall@1" and summary["recall@1"]["n"] == 3
    values = [r["history"][-1]["metrics"]["recall@1"] for r in report["runs"]]
    assert summary["recall@1"]["mean"] == pytest.approx(sum(values) / 3)
    assert sorted(p.name for p in out.iterdir()) == ["seed-1", "seed-2", "seed-3"]


def test_adapter_then_adapted_delta_search(data):
    root, shapes, store = data
    out = root / "heads"
    report = invoke_json(
        "train", "adapter", "--images", str(root / "images"), "--captions", str(root / "captions.tsv"),
        "--output", str(out), "--epochs", "2", "--batch-size", "6", "--val-captions", str(root / "captions.tsv"),
        "--val-images", str(root / "images"), *TINY,
    )  # fmt: skip
    history = report["runs"][0]["history"]
    assert len(history) == 2 and 0 <= history[-1]["metrics"]["recall@1"] <= 1
    hits = invoke_json("search", "--store", str(store), "--image", str(shapes.path("circle", "red", 0)),
                       "--from", "red", "--to", "blue", "--method", "adapted-delta", "--checkpoint", str(out),
                       "-k", "2")  # fmt: skip
    assert hits["method"] == "adapted-delta" and len(hits["results"]) == 2


def test_oti_phi_and_their_searches(data):
    root, shapes, store = data
    oti = root / "oti"
    report = invoke_json(
        "train", "oti", "--images", str(root / "images"), "--output", str(oti), "--steps", "2",
        "--batch-size", "9", "--top-k", "2", "--val-triplets", str(root / "images" / "val.json"), *TINY,
    )  # fmt: skip
    assert report["images"] == 18 and report["inverted"] == 18 and "recall@1" in report["metrics"]
    phi = root / "phi"
    report = invoke_json(
        "train", "phi", "--oti", str(oti), "--output", str(phi), "--epochs", "1", "--batch-size", "9",
        "--top-k", "2", *TINY,
    )  # fmt: skip
    assert report["runs"][0]["history"][0]["steps"] == 2
    for method, checkpoint in (("searle", phi), ("oti", oti)):
        reference = str(shapes.path("square", "green", 0))
        hits = invoke_json("search", "--store", str(store), "--image", reference, "--text", "is red",
                           "--method", method, "--checkpoint", str(checkpoint), "-k", "2")  # fmt: skip
        assert hits["method"] == method and len(hits["results"]) == 2


def test_finetune_writes_a_model_folder(data):
    root, _, _ = data
    out = root / "finetuned"
    report = invoke_json(
        "train", "finetune", "--triplets", str(root / "images" / "train.json"), "--output", str(out),
        "--epochs", "1", "--batch-size", "9", "--lr", "1e-4", *TINY,
    )  # fmt: skip
    assert report["runs"][0]["history"][0]["steps"] == 2
    assert (out / "config.json").exists() and (out / "clipmath.json").exists()
    store = root / "finetuned-store"  # the fine-tuned model is a model of its own: index with it, then search
    indexed = invoke_json("index", str(root / "images"), "--store", str(store), "--model", str(out))
    assert indexed["added"] == 18
    hits = invoke_json("search", "--store", str(store), "--model", str(out), "--image",
                       str(root / "images" / "circle_red_0.png"), "--text", "is blue", "-k", "1")  # fmt: skip
    assert hits["model"].startswith("local:finetuned@") and hits["method"] == "sum"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "adapter", "-o", "{tmp}/x", "--model", "tiny-random-clip"], "--images + --captions, or --coco"),
        (["train", "combiner", "-o", "{tmp}/x", "--triplets", "{tmp}/none.json"], "file not found"),
        (["train", "combiner", "-o", "{tmp}/x", "--triplets", "{root}/images/train.json", "--seeds", "1", "x",
          "--model", "tiny-random-clip"], "--seeds takes integers"),
        (["train", "phi", "-o", "{tmp}/x", "--oti", "{tmp}/none", "--model", "tiny-random-clip"], "OTI checkpoint"),
        (["search", "--store", "{root}/store", "--image", "{root}/images/circle_red_0.png", "--text", "x",
          "--method", "combiner", "--checkpoint", "{tmp}/other"], "trained on model 'tiny-random-clip:1'"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(data, tmp_path, monkeypatch, capsys, args, message):
    root, _, _ = data
    if "{tmp}/other" in args:
        result = runner.invoke(app, [
            "train", "combiner", "--triplets", str(root / "images" / "train.json"), "-o", str(tmp_path / "other"),
            "--epochs", "1", "--projection-dim", "8", "--hidden-dim", "8", "--model", "tiny-random-clip:1", "-q",
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
    monkeypatch.setattr("sys.argv", ["clipmath"] + [a.format(root=root, tmp=tmp_path) for a in args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.err.splitlines()[-1].startswith("error: ") and message in captured.err.splitlines()[-1]
    assert "Traceback" not in captured.err
