"""The CLI end to end on the tiny model: index, info, search (every query form) with --json, and user errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clipmath.cli import app, main

runner = CliRunner()


@pytest.fixture
def store(tmp_path, image_folder):
    path = tmp_path / "store"
    result = runner.invoke(
        app, ["index", str(image_folder), "--store", str(path), "--model", "tiny-random-clip", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 12 and "tiny-random-clip" in report["model"]
    return path


def search_json(store, *args: str) -> dict:
    result = runner.invoke(app, ["search", "--store", str(store), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_search_forms_give_parseable_json(store, image_folder):
    ref = str(image_folder / "img_0000.jpg")
    for args, method in [
        (["--image", ref, "--text", "in red"], "sum"),
        (["--image", ref, "--from", "cat", "--to", "dog", "--lam", "0.5"], "delta"),
        (["--expr", f'+{ref} -"a cat" +"a dog"'], "expr"),
        (["--text", "a dog"], "text"),
        (["--image", ref, "--method", "image"], "image"),
    ]:
        payload = search_json(store, *args, "-k", "3")
        assert payload["method"] == method
        assert "RANDOM WEIGHTS" in payload["model"]
        ranks = [r["rank"] for r in payload["results"]]
        assert ranks == [1, 2, 3]
        scores = [r["score"] for r in payload["results"]]
        assert scores == sorted(scores, reverse=True)
        if "--image" in args:
            assert "img_0000.jpg" not in [r["id"] for r in payload["results"]]  # reference excluded


def test_reference_may_be_a_gallery_id_and_can_be_included(store):
    payload = search_json(store, "--image", "img_0005.png", "--include-reference", "-k", "1")
    assert payload["results"][0]["id"] == "img_0005.png"
    assert payload["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_faiss_index_option_matches_exact(store):
    exact = search_json(store, "--text", "a dog", "-k", "5")
    flat = search_json(store, "--text", "a dog", "-k", "5", "--index", "flat")
    assert [r["id"] for r in exact["results"]] == [r["id"] for r in flat["results"]]


def test_info_json(store):
    result = runner.invoke(app, ["info", str(store), "--json"])
    info = json.loads(result.stdout)
    assert (info["count"], info["dim"], info["model_id"]) == (12, 32, "tiny-random-clip")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--store", "{store}"], "give a query"),
        (["search", "--store", "{store}", "--image", "missing.jpg"], "image not found"),
        (["search", "--store", "{store}", "--from", "cat"], "--from and --to go together"),
        (["search", "--store", "{store}", "--expr", '+a.jpg -"x'], "unterminated quote"),
        (["search", "--store", "{store}", "--text", "x", "--method", "nope"], "unknown method"),
        (["search", "--store", "{store}", "--text", "x", "--index", "annoy"], "unknown index"),
        (["search", "--store", "{tmp}/none", "--text", "x"], "no clipmath store"),
        (["index", "{tmp}/none", "--store", "{tmp}/s2", "--model", "tiny-random-clip"], "image folder not found"),
        (["index", "{tmp}", "--store", "{tmp}/s3", "--model", "{tmp}"], "not a saved CLIP model folder"),
        (["index", "{tmp}", "--store", "{tmp}/s3", "--model", "no-such/model"], "could not load CLIP"),
        (["index", "{tmp}", "--store", "{tmp}/s3", "--model", "tiny-random-clip", "--device", "cuda"], "no CUDA"),
    ],
)
def test_user_errors_are_one_line_with_status_2(store, tmp_path, monkeypatch, capsys, args, message):
    argv = ["clipmath"] + [a.format(store=store, tmp=tmp_path) for a in args]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    last = captured.err.splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in captured.err and captured.err.count("error:") == 1


def test_methods_lists_zero_shot_methods():
    result = runner.invoke(app, ["methods", "--json"])
    assert {"image", "text", "sum", "delta", "expr"} <= set(json.loads(result.stdout))
