"""Each model family computes what its own library computes (issue 21).

Random-weight models of real architectures (shrunk, see ``tests/model_families.py``) are loaded the way a user
brings them (a local folder: OpenCLIP's hub layout, or a transformers ``save_pretrained`` folder); clipmath's image
embeddings of the example photos (its whole path: decode, parallel pipeline, model) and text embeddings of captions
must equal the library's own reference path (its own preprocessing, tokenizer and encode functions) to 1e-5.
The transformers SigLIP / SigLIP 2 / Chinese-CLIP tokenizers use a locally built vocabulary (no download here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.encoders import load_encoder
from clipmath.errors import ModelLoadError
from tests.model_families import CAPTIONS, CJK_CAPTIONS, PHOTOS, hf_folder, open_clip_folder

TOL = 1e-5
needs_open_clip = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("open_clip") is None,
    reason="open_clip is not installed (pip install 'clipmath[models]')",
)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def _normalised(features) -> np.ndarray:
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    return torch.nn.functional.normalize(features.float(), dim=-1).numpy()


def open_clip_reference(folder, photos, texts):
    """open_clip's own path: its eval transform on each PIL image, its tokenizer, encode_image/encode_text."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        images = model.encode_image(torch.stack([preprocess(Image.open(p)) for p in photos]))
        return _normalised(images), _normalised(model.encode_text(tokenizer(texts)))


def hf_reference(folder, photos, texts, padding):
    """transformers' own path: the Pillow image processor, the tokenizer, get_image/text_features."""
    import transformers as t

    config = t.AutoConfig.from_pretrained(folder)
    model = t.AutoModel.from_pretrained(folder, config=config).eval()
    processor = t.AutoImageProcessor.from_pretrained(folder, backend="pil")
    tokenizer = t.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor(images=[Image.open(p).convert("RGB") for p in photos], return_tensors="pt")["pixel_values"]
        images = model.get_image_features(pixel_values=pixels)
        tokens = tokenizer(texts, padding=padding, max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")  # fmt: skip
        if padding == "max_length":
            texts_out = model.get_text_features(input_ids=tokens["input_ids"])
        else:
            texts_out = model.get_text_features(**tokens)
    return _normalised(images), _normalised(texts_out)


def _clipmath(folder, texts):
    encoder = load_encoder(str(folder))
    encoded = encoder.encode_files([str(p) for p in PHOTOS], workers=0)
    assert encoded.indices == list(range(len(PHOTOS))), encoded.failed
    return encoder, encoded.vectors, encoder.encode_texts(texts)


@needs_open_clip
@pytest.mark.parametrize(("arch", "resize_mode"), [("ViT-B-32", "shortest"), ("ViT-B-32", "squash"),
                                                   ("convnext", "shortest")])  # fmt: skip
def test_open_clip_matches_the_library(models_dir, arch, resize_mode):
    folder = open_clip_folder(models_dir, arch, resize_mode=resize_mode)
    encoder, images, texts = _clipmath(folder, CAPTIONS)
    ref_images, ref_texts = open_clip_reference(folder, PHOTOS, CAPTIONS)
    assert encoder.info.backend == "open_clip" and encoder.pipeline_spec() is not None  # the fast pipeline ran
    assert np.abs(images - ref_images).max() < TOL
    assert np.abs(texts - ref_texts).max() < TOL
    assert "RANDOM WEIGHTS" in encoder.info.label() and encoder.info.model_id.startswith("local:open_clip-")


@needs_open_clip
def test_open_clip_letterbox_uses_the_library_transform(models_dir):
    folder = open_clip_folder(models_dir, "ViT-B-32", resize_mode="longest")
    encoder, images, _ = _clipmath(folder, CAPTIONS[:1])
    ref_images, _ = open_clip_reference(folder, PHOTOS, CAPTIONS[:1])
    assert encoder.pipeline_spec() is None and "open_clip's own transform" in encoder.info.description
    assert np.abs(images - ref_images).max() < TOL


@pytest.mark.parametrize(("family", "texts", "padding"), [
    ("siglip", CAPTIONS, "max_length"),
    ("siglip2", CAPTIONS, "max_length"),
    ("chinese_clip", CJK_CAPTIONS, True),
])  # fmt: skip
def test_transformers_families_match_the_library(models_dir, family, texts, padding):
    folder = hf_folder(models_dir, family)
    encoder, images, ours = _clipmath(folder, texts)
    ref_images, ref_texts = hf_reference(folder, PHOTOS, texts, padding)
    expected_backend = "hf-chinese_clip" if family == "chinese_clip" else "hf-siglip"
    assert encoder.info.backend == expected_backend and encoder.pipeline_spec() is not None
    assert np.abs(images - ref_images).max() < TOL
    assert np.abs(ours - ref_texts).max() < TOL
    if padding == "max_length":  # SigLIP pads every text to its full context, whatever the batch
        assert encoder.tokenize(["a cat"])["input_ids"].shape[1] == 64


def test_the_class_comes_from_model_type_not_the_name(models_dir, tmp_path):
    folder = hf_folder(models_dir, "siglip")
    renamed = tmp_path / "clip-vit-base-patch32"  # a CLIP-sounding name does not make it CLIP
    renamed.symlink_to(folder, target_is_directory=True)
    assert load_encoder(str(renamed)).info.backend == "hf-siglip"
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "siglip2"}')
    with pytest.raises(ModelLoadError, match="NaFlex"):
        load_encoder(str(odd))


@needs_open_clip
def test_open_clip_names_and_missing_weights_say_what_to_bring(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="open_clip_config.json") as missing:
        load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert "\n" not in str(missing.value) and "ViT-B-32/laion2b_s34b_b79k" in str(missing.value)
    with pytest.raises(ModelLoadError, match="not an open_clip architecture"):
        load_encoder("open_clip:ViT-Q-99/laion")
    with pytest.raises(ModelLoadError, match="has no 'nope' weights"):
        load_encoder("open_clip:ViT-B-32/nope")
    empty = tmp_path / "brought"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no weights"):
        load_encoder(str(empty))


# ---- every family through the front ends ---------------------------------------------------------------------
FAMILIES = [
    pytest.param(("open_clip", "ViT-B-32"), marks=needs_open_clip, id="open_clip-ViT-B-32"),
    pytest.param(("open_clip", "convnext"), marks=needs_open_clip, id="open_clip-convnext"),
    pytest.param(("hf", "siglip"), id="siglip"),
    pytest.param(("hf", "siglip2"), id="siglip2"),
    pytest.param(("hf", "chinese_clip"), id="chinese_clip"),
]


def _folder(models_dir, family):
    kind, name = family
    return open_clip_folder(models_dir, name) if kind == "open_clip" else hf_folder(models_dir, name)


@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory):
    from tests.benchmark_folders import build_cirr

    return build_cirr(tmp_path_factory.mktemp("cirr") / "CIRR")


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_indexes_searches_evaluates_and_serves(models_dir, cirr_root, tmp_path, family):
    import json

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from clipmath.cli import app
    from clipmath.compose import build_query
    from clipmath.retrieval import Retriever
    from clipmath.serve.app import create_app
    from tests.model_families import GALLERY

    runner = CliRunner()
    model = str(_folder(models_dir, family))
    store = tmp_path / "store"
    indexed = runner.invoke(app, ["index", str(GALLERY / "skimage"), "--store", str(store), "--model", model, "--json"])
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["added"] == len(list((GALLERY / "skimage").iterdir()))
    found = runner.invoke(app, ["search", "--store", str(store), "--image", "chelsea.png", "--text", "a photo of a cat",
                                "--model", model, "-k", "2", "--json"])  # fmt: skip
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["results"]) == 2
    evaluated = runner.invoke(app, ["eval", "--dataset", "cirr", "--path", str(cirr_root), "--model", model, "--method",
                                    "sum", "--limit", "5", "--cache", str(tmp_path / "c"), "--json"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    (row,) = json.loads(evaluated.stdout)["results"]
    assert row["method"] == "sum" and 0.0 <= row["metrics"]["R@1"] <= 100.0
    retriever = Retriever.open(store, model)
    with TestClient(create_app(retriever), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
        answer = client.post("/api/search", json={"text": "a photo of a cat", "k": 3})
        # a multilingual query through the photo library's route: the same ranking as the core's own search
        chinese = client.post("/api/photos/search", json={"text": CJK_CAPTIONS[0], "k": 3})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"]) == 3
    assert chinese.status_code == 200, chinese.text
    (own,) = retriever.search([build_query(text=CJK_CAPTIONS[0])], method="text", k=3)
    assert [hit["id"] for hit in chinese.json()["results"]] == [hit.id for hit in own]
    expected_backend = (
        "open_clip" if family[0] == "open_clip" else f"hf-{'siglip' if 'siglip' in family[1] else family[1]}"
    )
    assert expected_backend in json.dumps(info)


@needs_open_clip
def test_a_store_of_one_family_refuses_another(models_dir, tmp_path):
    from typer.testing import CliRunner

    from clipmath.cli import app
    from tests.model_families import GALLERY

    runner = CliRunner()
    openclip, siglip = str(open_clip_folder(models_dir, "ViT-B-32")), str(hf_folder(models_dir, "siglip"))
    for made_with, other in ((openclip, siglip), (siglip, openclip)):
        store = tmp_path / f"store-{len(made_with)}"
        indexed = runner.invoke(app, ["index", str(GALLERY / "skimage"), "--store", str(store), "--model", made_with])
        assert indexed.exit_code == 0, indexed.output
        refused = runner.invoke(app, ["search", "--store", str(store), "--text", "a cat", "--model", other])
        assert refused.exit_code != 0 and "vectors of two models cannot be mixed" in str(refused.exception)
        made_id, other_id = (load_encoder(m).info.model_id for m in (made_with, other))
        assert f"model '{made_id}'" in str(refused.exception) and f"in use is '{other_id}'" in str(refused.exception)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_text_tower_takes_pseudo_tokens(models_dir, family):
    """Textual inversion (SEARLE, LinCIR): the placeholder's input embedding replaced by a word's own embedding
    gives that word's sentence embedding, and gradients reach the pseudo-token."""
    encoder = load_encoder(str(_folder(models_dir, family)))
    table = encoder.token_embedding_table()
    word = "cat"
    word_ids = [i for i in encoder.tokenize([word])["input_ids"][0].tolist() if i not in encoder.special_token_ids()]
    assert len(word_ids) == 1, word_ids
    pseudo = table.weight[word_ids[0]].detach().clone()[None].requires_grad_(True)
    with_pseudo = encoder.text_features_with_pseudo_tokens(["a photo of $"], pseudo)
    with torch.no_grad():
        direct = encoder.text_features(encoder.tokenize([f"a photo of {word}"]))
    assert torch.allclose(with_pseudo, direct, atol=1e-5)
    with_pseudo.sum().backward()
    assert pseudo.grad is not None and float(pseudo.grad.abs().sum()) > 0


def test_models_lists_families_and_known_checkpoints():
    import json

    from typer.testing import CliRunner

    from clipmath.cli import app

    runner = CliRunner()
    listing = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    families = {f["name"] for f in listing["families"]}
    assert {"open_clip", "hf-clip", "hf-siglip", "hf-chinese_clip", "hf-altclip"} <= families
    assert {"open_clip:ARCH/TAG", "hf-hub:ORG/REPO"} <= {e["name"] for e in listing["encoders"]}
    known = json.loads(runner.invoke(app, ["models", "--known", "--json"]).stdout)
    names = {m["name"]: m for m in known["models"]}
    assert names["open_clip:ViT-B-32/laion2b_s34b_b79k"]["dim"] == 512
    assert all(m["source"] in known["sources"] and m["licence"] for m in known["models"])
    printed = runner.invoke(app, ["models", "--known"]).stdout
    assert "ViT-H-14/laion2b_s32b_b79k" in printed and "not clipmath's measurements" in printed


@pytest.mark.parametrize("family", ["hf:siglip", pytest.param("open_clip:ViT-B-32", marks=needs_open_clip)])
def test_gpu_check_covers_the_families_dry_run(tmp_path, family):
    """bench/gpu_check.py's family rows, on the CPU with the tiny models (the GPU run uses real sizes)."""
    from bench.gpu_check import CHECKS, Context
    from tests.model_families import PHOTOS

    checks = dict(CHECKS)
    assert {"encode open_clip:ViT-B-32", "encode hf:siglip", "encode hf:siglip2", "encode hf:chinese_clip"} <= set(
        checks
    )
    ctx = Context("cpu", "auto", True, tmp_path, photos=list(PHOTOS))
    assert "img/s files→vectors" in checks[f"encode {family}"](ctx)
