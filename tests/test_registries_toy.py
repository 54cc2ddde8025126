"""A toy compose method and a toy encoder, added through the public registries only, used from the Python API.

Nothing outside this file knows about them: registering is the whole integration (issue 9).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.compose import METHODS, Composer, MethodSpec, build_query, infer_method, register_method
from clipmath.encoders import (
    ENCODERS,
    Encoder,
    EncoderInfo,
    EncoderSpec,
    ImageTransform,
    load_encoder,
    register_encoder,
)
from clipmath.errors import ComposeError, ModelLoadError
from clipmath.retrieval import Retriever
from clipmath.store import Gallery, index_folder

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


class ColourEncoder(Encoder):
    """Images embed as their mean RGB; a text embeds as the colour it names (3-d, deterministic, no weights)."""

    def __init__(self, transform: ImageTransform, brightness: float = 1.0) -> None:
        self.device = torch.device("cpu")
        self.transform = transform
        self.brightness = brightness
        self.table = torch.nn.Embedding.from_pretrained(torch.tensor(list(COLOURS.values())))
        self.info = EncoderInfo("toy-colour", "toy", 3, pretrained=False, description="mean colour")

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([torch.from_numpy(np.asarray(img, dtype=np.float32)).mean(dim=(0, 1)) for img in images])

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels * self.brightness

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([[list(COLOURS).index(t.split()[-1])] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def text_features(self, tokens, token_overrides=None) -> torch.Tensor:
        return self.table(tokens["input_ids"][:, 0])

    def token_embedding_table(self) -> torch.nn.Embedding:
        return self.table

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {}


def load_colour_encoder(arg, options) -> ColourEncoder:
    return ColourEncoder(options.transform, float(arg) if arg is not None else 1.0)


class MostlyText(Composer):
    """A toy method: the text's colour, nudged by a fifth of the reference image."""

    name = "mostly-text"
    needs = ("reference", "text")

    def combine(self, embeddings):
        return embeddings.text + 0.2 * embeddings.reference


@pytest.fixture
def toys():
    register_encoder(EncoderSpec("toy-colour", "mean colour (test toy)", False, load_colour_encoder, "BRIGHTNESS"))
    register_method(MethodSpec("mostly-text", "text + 0.2·img (test toy)", ("reference", "text"), MostlyText))
    yield
    ENCODERS.unregister("toy-colour")
    METHODS.unregister("mostly-text")


def test_toy_method_and_encoder_work_through_the_python_api(toys, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pictures = {"red": (230, 10, 10), "darkred": (120, 0, 0), "green": (10, 200, 10), "blue": (0, 0, 250)}
    for name, rgb in pictures.items():
        Image.new("RGB", (8, 8), rgb).save(folder / f"{name}.png")
    encoder = load_encoder("toy-colour")
    assert isinstance(encoder, ColourEncoder) and "toy-colour" in ENCODERS.names()
    assert load_encoder("toy-colour:0.5").brightness == 0.5
    index_folder(tmp_path / "store", folder, encoder, progress=False)

    retriever = Retriever.open(tmp_path / "store")  # the store's model id loads the toy through the registry
    assert isinstance(retriever.encoder, ColourEncoder)
    query = build_query(reference=str(folder / "green.png"), text="a photo that is red")
    assert infer_method(reference=query.reference, text=query.text) == "sum"
    hits = retriever.search([query], method="mostly-text", k=10)[0]
    assert [h.id for h in hits][:2] == ["red.png", "darkred.png"] and "green.png" not in [h.id for h in hits]
    assert retriever.composer("mostly-text").__class__ is MostlyText
    assert Gallery.open(tmp_path / "store").model_id == "toy-colour"


def test_registered_toys_are_listed_and_checked(toys):
    from clipmath.compose import available_methods, zero_shot_methods

    assert available_methods()["mostly-text"] == "text + 0.2·img (test toy)" and "mostly-text" in zero_shot_methods()
    with pytest.raises(ComposeError, match="takes no checkpoint"):
        METHODS.get("mostly-text").make(checkpoint="x")
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec("mostly-text", "again", ("text",), MostlyText))
    with pytest.raises(ValueError, match="unknown query field"):
        MethodSpec("bad", "bad", ("colour",), MostlyText)
    with pytest.raises(ModelLoadError, match="did you mean 'toy-colour'.*hub name"):
        load_encoder("toy-color")
    with pytest.raises(ModelLoadError, match="takes no ':argument'"):
        load_encoder("offline-imagenet-minilm:3")


def test_toys_are_gone_after_unregistering():
    assert "toy-colour" not in ENCODERS and "mostly-text" not in METHODS
    with pytest.raises(ComposeError, match="unknown method 'mostly-text'"):
        METHODS.get("mostly-text")
