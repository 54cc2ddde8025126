"""Checkpoint format: safetensors + JSON, bit-identical round trips, and refusal of the wrong model or kind."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from clipmath.compose import get_composer, learned_methods
from clipmath.compose.checkpoint import describe, load_checkpoint, save_checkpoint
from clipmath.compose.combiner import Combiner
from clipmath.encoders import EncoderInfo
from clipmath.errors import ComposeError, ModelLoadError

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(info: EncoderInfo):
    torch.manual_seed(3)
    module = Combiner(info.dim, 16, 24)
    checkpoint = describe("combiner", info, "clip", {"projection_dim": 16, "hidden_dim": 24, "dropout": 0.5})
    checkpoint.tensors = dict(module.state_dict())
    checkpoint.training = {"seed": 3, "history": [{"epoch": 1, "loss": 1.5}]}
    return module, checkpoint


@pytest.mark.parametrize("name", ["combiner_ckpt", "combiner.safetensors"])
def test_round_trip_is_bit_identical_and_self_describing(tmp_path, tiny_encoder, name):
    module, checkpoint = _checkpoint(tiny_encoder.info)
    path = save_checkpoint(checkpoint, tmp_path / name)
    loaded = load_checkpoint(path, "combiner", tiny_encoder)
    assert loaded.kind == "combiner" and loaded.model_id == tiny_encoder.info.model_id
    assert loaded.config["hidden_dim"] == 24 and loaded.training["history"][0]["loss"] == 1.5
    assert set(loaded.tensors) == set(module.state_dict())
    for key, value in module.state_dict().items():
        assert loaded.tensors[key].dtype == value.dtype
        assert torch.equal(loaded.tensors[key], value)
    # the weights file is a safetensors file (8-byte header length + JSON header), not a pickle
    weights = path / "weights.safetensors" if path.is_dir() else path
    raw = weights.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["clipmath"])["kind"] == "combiner"


def test_lone_safetensors_file_carries_its_description(tmp_path, tiny_encoder):
    _, checkpoint = _checkpoint(tiny_encoder.info)
    path = save_checkpoint(checkpoint, tmp_path / "c.safetensors")
    path.with_suffix(".json").unlink()
    assert load_checkpoint(path).config["projection_dim"] == 16


def test_wrong_model_or_kind_is_a_clear_error(tmp_path, tiny_encoder):
    _, checkpoint = _checkpoint(tiny_encoder.info)
    path = save_checkpoint(checkpoint, tmp_path / "ckpt")
    other = EncoderInfo(model_id="some/other-model", backend="hf-clip", dim=tiny_encoder.dim, pretrained=True)
    with pytest.raises(ModelLoadError, match="trained on model 'tiny-random-clip'.*some/other-model"):
        load_checkpoint(path, "combiner", other)
    with pytest.raises(ModelLoadError, match="holds a 'combiner' model; this needs phi"):
        load_checkpoint(path, "phi")
    with pytest.raises(ModelLoadError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_registry_loads_learned_methods_from_checkpoints(tmp_path, tiny_encoder):
    assert {"combiner", "adapted-delta", "searle", "oti"} <= set(learned_methods())
    module, checkpoint = _checkpoint(tiny_encoder.info)
    path = save_checkpoint(checkpoint, tmp_path / "ckpt")
    composer = get_composer("combiner", tiny_encoder, str(path))
    reference, text = np.eye(2, tiny_encoder.dim, dtype=np.float32), np.eye(2, tiny_encoder.dim, k=3, dtype=np.float32)
    from clipmath.compose import QueryEmbeddings

    got = composer.combine(QueryEmbeddings(reference=reference, text=text))
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(reference), torch.from_numpy(text)).numpy()
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ComposeError, match="needs a checkpoint"):
        get_composer("combiner", tiny_encoder)
    with pytest.raises(ModelLoadError, match="holds a 'combiner' model"):
        get_composer("searle", tiny_encoder, str(path))
