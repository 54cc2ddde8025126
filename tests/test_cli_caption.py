"""`clipmath caption` and `clipmath eval-captions` through the CLI (tiny random models: plumbing only)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clipmath.cli import app, main
from tests.conftest import GALLERY

runner = CliRunner()
SMALL = [
    "--lm",
    "tiny-random-lm",
    "--model",
    "tiny-random-clip",
    "--beam-size",
    "2",
    "--max-length",
    "3",
    "--num-iterations",
    "1",
    "--json",
]


def test_caption_an_image_and_an_expression():
    image = runner.invoke(app, ["caption", "--image", str(GALLERY / "skimage/chelsea.png"), *SMALL])
    assert image.exit_code == 0, image.output
    payload = json.loads(image.stdout)
    assert len(payload["captions"]) == 2 and "RANDOM WEIGHTS" in payload["language_model"]
    assert all(c["text"].startswith("Image of a") for c in payload["captions"])
    scores = [c["clip_score"] for c in payload["captions"]]
    assert scores == sorted(scores, reverse=True)
    arithmetic = GALLERY / "arithmetic"
    expr = f"+{arithmetic / 'woman2.jpg'} +{arithmetic / 'king2.jpg'} -{arithmetic / 'man2.jpg'}"
    result = runner.invoke(
        app, ["caption", "--expr", expr, "--preset", "arithmetic", "--cond-text", "A picture of", *SMALL]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["config"]["end_factor"] == 1.06 and payload["config"]["cond_text"] == "A picture of"
    assert all(c["text"].startswith("A picture of") for c in payload["captions"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["caption"], "exactly one of --image or --expr"),
        (["caption", "--expr", '+a.jpg -"x'], "unterminated quote"),
        (["caption", "--image", "x.jpg", "--preset", "poem"], "unknown preset"),
        (["eval-captions", "{tmp}/missing.json"], "caption file not found"),
    ],
)
def test_caption_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setattr("sys.argv", ["clipmath"] + [a.format(tmp=tmp_path) for a in args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    last = capsys.readouterr().err.splitlines()[-1]
    assert exit_info.value.code == 2 and last.startswith("error: ") and message in last


def test_eval_captions_scores_a_file(tmp_path):
    items = [
        {
            "prediction": "a cat sitting on a green pillow",
            "references": ["a cat lying on a green pillow", "a black and white cat on a pillow"],
        },
        {"prediction": "a pizza on a board", "references": ["a pizza sitting on top of a wooden cutting board"]},
    ]
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(items))
    result = runner.invoke(app, ["eval-captions", str(path), "--no-meteor", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["count"] == 2 and payload["percent"]["METEOR"] is None
    assert 0 < payload["percent"]["BLEU-1"] <= 100


def test_serve_caption_lm_enables_the_caption_endpoint(tmp_path, tiny_encoder):
    from fastapi.testclient import TestClient

    from clipmath.caption.service import make_captioner
    from clipmath.serve import create_app
    from tests.serve_support import build_store, open_retriever

    assert make_captioner(tiny_encoder, None, None, "zerocap", "cpu") is None
    store, _ = build_store(tmp_path, tiny_encoder)
    captioner = make_captioner(tiny_encoder, "tiny-random-lm", None, "zerocap", "cpu")
    with TestClient(
        create_app(open_retriever(store, tiny_encoder), captioner=captioner), base_url="http://127.0.0.1"
    ) as client:
        assert "ZeroCap" in client.get("/api/info").json()["captioning"]
        body = client.post("/api/caption", json={"image": {"gallery_id": "skimage/coffee.png"}}).json()
        assert body["caption"].startswith("Image of a")
