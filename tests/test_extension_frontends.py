"""Issue 9's promise, end to end: a toy encoder, a toy compose method and a toy benchmark, added through the
public registries only, work from the Python API, ``clipmath search``, ``clipmath eval`` and the HTTP API, with
no other file knowing about them."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from clipmath.cli import app, main
from clipmath.compose import METHODS, MethodSpec, register_method
from clipmath.data import CIRDataset, CIRQuery
from clipmath.encoders import ENCODERS, EncoderSpec, register_encoder
from clipmath.eval import BENCHMARKS, BenchmarkSpec
from clipmath.retrieval import Retriever
from clipmath.serve.app import create_app
from clipmath.store import index_folder
from tests.test_registries_toy import MostlyText, load_colour_encoder

runner = CliRunner()

#: Gallery pictures (name -> RGB); toy-colour embeds an image as its mean colour.
PICTURES = {"red": (230, 10, 10), "darkred": (120, 0, 0), "green": (10, 200, 10), "blue": (0, 0, 250)}
#: Toy benchmark queries: reference picture, caption (its last word is a colour), the target picture.
QUERIES = [("green", "make it red", "red"), ("red", "make it blue", "blue"), ("blue", "make it green", "green")]


def load_colour_benchmark(root, split, variant, check_images):
    names = list(PICTURES)
    queries = [CIRQuery(str(i), ref, caption, (target,)) for i, (ref, caption, target) in enumerate(QUERIES)]
    paths = {name: root / f"{name}.png" for name in names}
    return [CIRDataset("colours", "colours", split, root, queries, names, paths, exclude_reference=True)]


@pytest.fixture
def toys(tmp_path):
    register_encoder(EncoderSpec("toy-colour", "mean colour (test toy)", False, load_colour_encoder, "BRIGHTNESS"))
    register_method(MethodSpec("mostly-text", "text + 0.2·img (test toy)", ("reference", "text"), MostlyText))
    BENCHMARKS.register("colours", BenchmarkSpec(
        name="colours", title="Colours", description="recolour a picture", splits=("val",), default_split="val",
        default_method="mostly-text", monitor="R@1", query_fields=("reference", "text"),
        loader=load_colour_benchmark, protocol="clipmath.eval.scoring:RetrievalProtocol",
    ))  # fmt: skip
    folder = tmp_path / "images"
    folder.mkdir()
    for name, rgb in PICTURES.items():
        Image.new("RGB", (8, 8), rgb).save(folder / f"{name}.png")
    yield folder
    ENCODERS.unregister("toy-colour")
    METHODS.unregister("mostly-text")
    BENCHMARKS.unregister("colours")


def test_toys_from_cli_search_and_eval(toys, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    indexed = runner.invoke(app, ["index", str(toys), "--store", str(store), "--model", "toy-colour", "--json"])
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["added"] == 4

    args = ["search", "--store", str(store), "--image", "green.png", "--text", "a photo that is red"]
    found = runner.invoke(app, [*args, "--method", "mostly-text", "--json", "-k", "2"])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert payload["method"] == "mostly-text" and [r["id"] for r in payload["results"]] == ["red.png", "darkred.png"]

    listed = runner.invoke(app, ["methods", "--json"])
    assert "mostly-text" in listed.stdout
    monkeypatch.setattr("sys.argv", ["clipmath", *args, "--method", "mostly-txt"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "did you mean 'mostly-text'" in capsys.readouterr().err

    evaluated = runner.invoke(app, [
        "eval", "--dataset", "colours", "--path", str(toys), "--model", "toy-colour", "--methods", "mostly-text,image",
        "--cache", str(tmp_path / "cache"), "--json",
    ])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    scores = {row["method"]: row["metrics"]["R@1"] for row in report["results"]}
    assert scores["mostly-text"] == pytest.approx(100.0)  # every caption names its target's colour
    assert scores["image"] < 100.0  # the reference alone never finds a differently coloured target


def test_toys_from_the_http_api(toys, tmp_path):
    from clipmath.encoders import load_encoder

    store = tmp_path / "store"
    index_folder(store, toys, load_encoder("toy-colour"), progress=False)
    with TestClient(create_app(Retriever.open(store)), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
        body = {
            "reference": {"gallery_id": "green.png"},
            "text": "a photo that is red",
            "method": "mostly-text",
            "k": 2,
        }
        answer = client.post("/api/search", json=body)
    assert "mostly-text" in json.dumps(info["methods"]) and "toy-colour" in json.dumps(info)
    assert answer.status_code == 200, answer.text
    assert [hit["id"] for hit in answer.json()["results"]] == ["red.png", "darkred.png"]
