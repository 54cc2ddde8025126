"""LinCIR: phi trained on captions only, through `clipmath train lincir` and the shared loop; the lincir method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipmath.cli import app
from clipmath.train.lincir import mask_caption

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "caption-corpus" / "coco_captions.txt"


def test_self_masking_keeps_function_words_and_puts_one_token():
    assert mask_caption("A brown dog sitting on a sofa.") == "a $ on a"
    assert mask_caption("a man with a red helmet") == "a $ with a"
    assert mask_caption("on the a") is None


def test_train_lincir_loss_falls_checkpoint_reloads_and_method_searches(tmp_path, image_folder):
    from safetensors.torch import load_file

    texts = tmp_path / "captions.txt"
    texts.write_text("\n".join(CORPUS.read_text().splitlines()[:64]))
    runner, out = CliRunner(), tmp_path / "lincir"
    result = runner.invoke(app, ["train", "lincir", "--texts", str(texts), "-o", str(out), "--epochs", "6",
                                 "--batch-size", "16", "--lr", "1e-3", "--model", "tiny-random-clip", "--quiet",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    history = json.loads(result.stdout)["runs"][0]["history"]
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    checkpoint = Path(json.loads(result.stdout)["runs"][0]["checkpoint"])

    from clipmath.compose import get_composer
    from clipmath.encoders import load_encoder

    encoder = load_encoder("tiny-random-clip")
    composer = get_composer("lincir", encoder, str(checkpoint))
    weights = checkpoint / "weights.safetensors" if checkpoint.is_dir() else checkpoint
    saved = load_file(str(weights))
    for name, tensor in composer.phi.state_dict().items():  # the reloaded network is the saved one, bit for bit
        assert np.array_equal(tensor.numpy(), saved[name].numpy()), name

    store = str(tmp_path / "store")
    indexed = runner.invoke(app, ["index", str(image_folder), "--store", store, "--model", "tiny-random-clip"])
    assert indexed.exit_code == 0
    reference = str(next(p for p in sorted(image_folder.iterdir())))
    found = runner.invoke(app, ["search", "--store", store, "--image", reference, "--text", "is red", "--method",
                                "lincir", "--checkpoint", str(checkpoint), "-k", "3", "--json"])  # fmt: skip
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["method"] == "lincir" and len(json.loads(found.stdout)["results"]) == 3
