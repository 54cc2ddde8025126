"""The CLI end to end on the tiny model: index, info, search (every query form) with --json, and user errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipmath.cli import app, main
from clipmath.errors import ClipmathError

runner = CliRunner()
#: a subprocess imports this checkout's clipmath, not an installed one
SRC = str(Path(__file__).parents[1] / "src")
SRC_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.getenv("PYTHONPATH", "")])}


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
        (["index", "{tmp}", "--store", "{tmp}/s3", "--model", "{tmp}"], "is not a saved model folder"),
        (["index", "{tmp}", "--store", "{tmp}/s3", "--model", "no-such/model"], "could not load 'no-such/model'"),
        (["index", "{tmp}", "--store", "{tmp}/s3", "--model", "tiny-random-clip", "--device", "cuda"], "no CUDA"),
        (["search", "--store", "{store}", "--text", "x", "--dtype", "float16"], "float16 is not supported on the CPU"),
        (["index", "{tmp}", "--store", "{tmp}/s4", "--dtype", "double"], "--dtype is one"),
        (["index", "{tmp}", "--store", "{tmp}/s4", "--preprocessing", "squash"], "--preprocessing is one of"),
        (["index", "{tmp}", "--store", "{tmp}/s4", "--video-every", "0"], "--video-every must be at least 0.1"),
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "img_0000.jpg", "--from", "a", "--to", "b", "--lam", "nan"], "lam"),
        (["--image", "img_0000.jpg", "--from", "a", "--to", "b", "--lam", "inf"], "lam"),
        (["--image", "img_0000.jpg", "--from", "a", "--to", "b", "--lam", "-inf"], "lam"),
        (["--image", "img_0000.jpg", "--from", "a", "--to", "b", "--lam", "1e30"], "lam"),
        (["--expr", '+img_0000.jpg +"bad \\x escape"'], "escape"),
        (["--expr", '+img_0000.jpg +"bad \\u12"'], "escape"),
    ],
)
def test_hostile_values_are_one_line_errors(store, monkeypatch, capsys, args, message):
    """#11: values a shell can carry (nan, inf, huge λ, a broken escape in a quoted text) never give a traceback
    or a silent empty result."""
    monkeypatch.setattr("sys.argv", ["clipmath", "search", "--store", str(store), *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.out
    lines = captured.err.splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1].lower()
    assert "Traceback" not in captured.err and captured.err.count("error:") == 1


def test_k_beyond_the_gallery_gives_every_image(store):
    payload = search_json(store, "--text", "a dog", "--k", "1000000000")
    assert len(payload["results"]) == 12 and [r["rank"] for r in payload["results"]] == list(range(1, 13))


def test_paths_with_rich_markup_print_literally(tmp_path):
    """A result id like '[bold]x.png' or 'a[1].png' is text, not rich markup (#11)."""
    from tests.conftest import write_images

    folder = tmp_path / "odd"
    write_images(folder, 3)
    names = ["[bold]x.png", "a[1].png", "[on red]z.jpg"]
    for path, name in zip(sorted(folder.iterdir()), names):
        path.rename(folder / (name[:-3] + path.suffix[1:]))
    names = sorted(path.name for path in folder.iterdir())
    store = tmp_path / "odd-store"
    result = runner.invoke(app, ["index", str(folder), "--store", str(store), "--model", "tiny-random-clip"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", "--store", str(store), "--text", "x", "-k", "3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in names:
        assert name in result.stdout


def test_models_lists_encoders_and_language_models():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    encoders = {entry["name"].split(":")[0] for entry in listing["encoders"]}
    lms = {entry["name"].split(":")[0] for entry in listing["language_models"]}
    assert {"tiny-random-clip", "offline-imagenet-minilm"} <= encoders and "tiny-random-lm" in lms
    shown = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "tiny-random-clip" in shown.stdout and "--lm" in shown.stdout


def test_help_of_every_command_has_an_example():
    import typer

    def leaves(command, path=()):  # every command below the groups (train adapter, data make-change-set, ...)
        if not hasattr(command, "list_commands"):  # a group lists commands
            return [path]
        return [
            leaf
            for name in command.list_commands(None)
            for leaf in leaves(command.get_command(None, name), (*path, name))
        ]

    for path in leaves(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "Example" in result.stdout, path
        examples = " ".join(result.stdout.split("Example", 1)[1].split())
        assert "clipmath " + " ".join(path) in examples, path


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "clipmath", "--help"], capture_output=True, text=True, timeout=120, env=SRC_ENV
    )
    assert result.returncode == 0 and "index" in result.stdout and "train" in result.stdout


def test_methods_lists_zero_shot_methods():
    result = runner.invoke(app, ["methods", "--json"])
    listing = json.loads(result.stdout)
    assert {"image", "text", "sum", "delta", "expr"} <= set(listing)
    assert set(listing["delta"]["needs"]) >= {"reference", "source", "target"} and not listing["delta"]["learned"]
    assert listing["combiner"]["learned"] and listing["combiner"]["train_command"] == "combiner"
    shown = runner.invoke(app, ["methods"]).stdout
    assert "--image --from --to" in shown and "train combiner" in shown


def test_core_errors_are_worded_with_flags():
    from clipmath.cli.output import error_line
    from clipmath.errors import ClipmathError, ComposeError

    missing = ComposeError("the 'target' text is missing")
    assert error_line(missing) == "error: the --to text is missing"
    assert error_line(ClipmathError("unknown method 'text'\n(see `clipmath methods`)")) == (
        "error: unknown method 'text' (see `clipmath methods`)"
    )
    worded = ComposeError("the 'text' is empty")
    worded.field = "text"  # type: ignore[attr-defined]
    assert error_line(worded) == "error: the --text is empty"
    assert error_line(ClipmathError("a submission needs every query: 'limit' must not be set")).endswith(
        "--limit must not be set"
    )


def test_importing_the_cli_imports_no_torch_or_fastapi():
    """`clipmath info` and `--help` start fast: heavy command modules load only when they run."""
    import subprocess
    import sys

    code = "import sys, clipmath.cli; print(sorted(m for m in ('torch', 'fastapi') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=SRC_ENV)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_a_lazy_command_whose_extra_is_missing_says_what_to_install(monkeypatch):
    from clipmath import cli

    monkeypatch.setitem(cli.LAZY_COMMANDS, "serve", "clipmath.cli.no_such_module:app")
    result = runner.invoke(app, ["serve"])
    assert isinstance(result.exception, ClipmathError) and "pip install 'clipmath[serve]'" in str(result.exception)


@pytest.mark.parametrize("name", ["duplicates", "serve", "train", "eval", "caption", "diff-caption"])
def test_lazy_commands_do_not_offer_shell_completion_options(name):
    """Completion is a top-level matter: a lazily loaded command's help lists only its own options."""
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "--install-completion" not in result.output and "--show-completion" not in result.output
