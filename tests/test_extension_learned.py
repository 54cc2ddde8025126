"""Issue 20's promise for learned methods: a toy learned compose method and its trainer, added through the public
registries only (one method spec, one trainer spec), are trained and used from the Python API, from
``clipmath train`` + ``clipmath search``, and from the HTTP API, with no file under ``cli/`` or ``serve/`` knowing
about them. The toy learns one weight ``w`` of ``(1 − w)·image + w·text`` from triplets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from clipmath.cli import app
from clipmath.compose import METHODS, Composer, MethodSpec, register_method
from clipmath.encoders import ENCODERS, EncoderSpec, load_encoder, register_encoder
from clipmath.options import setting
from clipmath.retrieval import Retriever
from clipmath.serve.app import create_app
from clipmath.serve.config import ServeConfig
from clipmath.store import index_folder
from clipmath.train import TRAINERS, RunOptions, TrainerSpec, TrainJob, TrainReport, train
from tests.test_extension_frontends import PICTURES, QUERIES
from tests.test_registries_toy import load_colour_encoder

runner = CliRunner()
CHECKPOINT_FILE = "toy-mix.json"


# ---- the extension: everything a plugin author writes -----------------------------------------------------
class ToyMix(Composer):
    def __init__(self, weight: float) -> None:
        self.weight = weight

    def combine(self, embeddings):
        return (1 - self.weight) * embeddings.reference + self.weight * embeddings.text


def load_toy_mix(encoder, checkpoint: str) -> ToyMix:
    return ToyMix(json.loads((Path(checkpoint) / CHECKPOINT_FILE).read_text())["weight"])


@dataclass
class ToyMixInputs:
    triplets: Path | None = setting(None, "JSON list of [reference, caption, target] file names.", required=True)
    images: Path | None = setting(None, "Folder the file names are in.", required=True)


@dataclass
class ToyMixConfig:
    steps: int = setting(60, "Optimiser steps.", minimum=1)
    lr: float = setting(0.3, "Learning rate.", minimum=0)


def run_toy_mix(job: TrainJob) -> TrainReport:
    triplets = json.loads(job.inputs.triplets.read_text())
    images = {
        name: Image.open(job.inputs.images / name).convert("RGB") for row in triplets for name in (row[0], row[2])
    }
    vectors = dict(zip(images, job.encoder.encode_images(list(images.values()))))
    reference, target = (torch.tensor(np.stack([vectors[row[i]] for row in triplets])) for i in (0, 2))
    text = torch.tensor(job.encoder.encode_texts([row[1] for row in triplets]))
    logit = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.Adam([logit], lr=job.config.lr)
    for _ in range(job.config.steps):
        weight = torch.sigmoid(logit)
        mixed = torch.nn.functional.normalize((1 - weight) * reference + weight * text, dim=-1)
        loss = (1 - (mixed * target).sum(-1)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    job.run.output.mkdir(parents=True, exist_ok=True)
    learned = float(torch.sigmoid(logit.detach()))
    (job.run.output / CHECKPOINT_FILE).write_text(json.dumps({"weight": learned}))
    final = float(loss.detach())
    return TrainReport({"weight": learned, "loss": final}, [f"w = {learned:.3f}, loss {final:.4f}"])


# ---- the test ---------------------------------------------------------------------------------------------
@pytest.fixture
def toy_mix(tmp_path):
    register_encoder(EncoderSpec("toy-colour", "mean colour (test toy)", False, load_colour_encoder, "BRIGHTNESS"))
    register_method(MethodSpec("toy-mix", "(1 − w)·img + w·text, w learned (test toy)", ("reference", "text"),
                               load_toy_mix, learned=True, train_command="toy-mix"))  # fmt: skip
    TRAINERS.register("toy-mix", TrainerSpec("toy-mix", "the weight of the toy-mix method", ToyMixInputs,
                                             ToyMixConfig, run_toy_mix, validates=False, seeds=False))  # fmt: skip
    folder = tmp_path / "images"
    folder.mkdir()
    for name, rgb in PICTURES.items():
        Image.new("RGB", (8, 8), rgb).save(folder / f"{name}.png")
    triplets = tmp_path / "triplets.json"
    triplets.write_text(json.dumps([[f"{ref}.png", caption, f"{goal}.png"] for ref, caption, goal in QUERIES]))
    store = tmp_path / "store"
    index_folder(store, folder, load_encoder("toy-colour"), progress=False)
    yield folder, triplets, store
    ENCODERS.unregister("toy-colour")
    METHODS.unregister("toy-mix")
    TRAINERS.unregister("toy-mix")


def _recolour(retriever: Retriever, checkpoint: str) -> list[str]:
    from clipmath.compose import CompositionQuery

    query = CompositionQuery(reference="green.png", text="a photo that is red")
    return sorted(hit.id for hit in retriever.search([query], method="toy-mix", k=2, checkpoint=checkpoint)[0])


def test_a_learned_toy_method_trains_and_searches_from_python(toy_mix, tmp_path):
    folder, triplets, store = toy_mix
    output = tmp_path / "python-run"
    report = train("toy-mix", ToyMixInputs(triplets, folder), ToyMixConfig(), RunOptions(output=output),
                   encoder=load_encoder("toy-colour"))  # fmt: skip
    assert report.payload["weight"] > 0.6  # the targets are the colour the caption names: the text wins
    assert _recolour(Retriever.open(store), str(output)) == ["darkred.png", "red.png"]  # the image alone: green
    with pytest.raises(Exception, match="needs a checkpoint .*clipmath train toy-mix"):
        _recolour(Retriever.open(store), "")


def test_a_learned_toy_method_from_the_command_line_and_the_http_api(toy_mix, tmp_path):
    folder, triplets, store = toy_mix
    output = tmp_path / "cli-run"
    args = ["train", "toy-mix", "--triplets", str(triplets), "--images", str(folder), "-o", str(output)]
    trained = runner.invoke(app, [*args, "--model", "toy-colour", "--json"])
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["weight"] > 0.6
    refused = runner.invoke(app, [*args, "--steps", "0"])
    assert "--steps must be at least 1" in str(refused.exception)
    assert "toy-mix" in runner.invoke(app, ["train", "--help"]).stdout

    listed = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    assert listed["toy-mix"]["learned"] and listed["toy-mix"]["train_command"] == "toy-mix"
    search = ["search", "--store", str(store), "--image", "green.png", "--text", "a photo that is red", "-k", "2"]
    found = runner.invoke(app, [*search, "--method", "toy-mix", "--checkpoint", str(output), "--json"])
    assert found.exit_code == 0, found.output
    assert sorted(r["id"] for r in json.loads(found.stdout)["results"]) == ["darkred.png", "red.png"]

    config = ServeConfig(checkpoints={"toy-mix": str(output)})
    with TestClient(create_app(Retriever.open(store), config), base_url="http://127.0.0.1") as client:
        body = {"reference": {"gallery_id": "green.png"}, "text": "a photo that is red", "method": "toy-mix", "k": 2}
        answer = client.post("/api/search", json=body)
        offered = json.dumps(client.get("/api/info").json()["methods"])
    assert answer.status_code == 200, answer.text
    assert sorted(hit["id"] for hit in answer.json()["results"]) == ["darkred.png", "red.png"] and "toy-mix" in offered


def test_every_learned_method_names_a_registered_trainer():
    learned = {name: spec.train_command for name, spec in METHODS.items() if spec.learned}
    assert learned and all(command in TRAINERS for command in learned.values()), learned


def test_an_installed_plugin_registers_before_the_command_runs(tmp_path, monkeypatch, capsys):
    """A package declaring an entry point in the ``clipmath.plugins`` group is imported by the CLI at start-up."""
    from clipmath.cli import main

    (tmp_path / "toy_plugin.py").write_text(
        "from clipmath.compose import MethodSpec, register_method\n"
        "from tests.test_registries_toy import MostlyText\n"
        "register_method(MethodSpec('plugin-text', 'a plugin method (test toy)', ('reference', 'text'), MostlyText))\n"
    )
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clipmath.plugins]\ntoy = toy_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("sys.argv", ["clipmath", "methods", "--json"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 0 and "plugin-text" in json.loads(capsys.readouterr().out)
    finally:
        METHODS.unregister("plugin-text")
    (dist / "entry_points.txt").write_text("[clipmath.plugins]\nbroken = toy_plugin_missing\n")
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert (
        exit_info.value.code == 2 and "plugin 'broken' (toy_plugin_missing) failed to load" in capsys.readouterr().err
    )
