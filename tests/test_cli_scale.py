"""The scale front ends: `clipmath merge`, `index --store-dtype/--files`, `index-kinds`, `search --recall` and
`--device cuda` without a GPU (one-line error). The Ray engine itself is tested in test_ray_engine.py."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from clipmath.cli import app
from clipmath.cli.output import error_line
from clipmath.store import Gallery

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_shards_indexed_from_file_lists_merge_into_one_float16_store(tmp_path, image_folder):
    names = sorted(p.name for p in image_folder.iterdir())
    (tmp_path / "a.txt").write_text("\n".join(names[:7]) + "\n")
    (tmp_path / "b.csv").write_text("path\n" + "\n".join(str(image_folder / n) for n in names[5:]) + "\n")
    for shard, listing in (("a", "a.txt"), ("b", "b.csv")):
        result = invoke(
            "index",
            image_folder,
            "--store",
            tmp_path / f"{shard}.store",
            "--model",
            "tiny-random-clip",
            "--files",
            tmp_path / listing,
            "--store-dtype",
            "float16",
            "--json",
        )
        assert result.exit_code == 0, result.output
    result = invoke("merge", tmp_path / "a.store", tmp_path / "b.store", "--into", tmp_path / "c.store", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total"] == 12 and report["already_present"] == 2
    with Gallery.open(tmp_path / "c.store") as merged:
        assert merged.info().vector_dtype == "float16"  # the first shard's precision
        assert sorted(merged.snapshot().ids) == names


def test_index_kinds_lists_the_registry():
    result = invoke("index-kinds", "--json")
    assert result.exit_code == 0, result.output
    assert {"exact", "hnsw", "ivfpq-opq"} <= {kind["name"] for kind in json.loads(result.stdout)}


def test_search_with_recall_target_reports_the_tuning(tmp_path, image_folder):
    store = tmp_path / "s.store"
    assert invoke("index", image_folder, "--store", store, "--model", "tiny-random-clip", "--json").exit_code == 0
    result = invoke("search", "--store", store, "--text", "x", "--index", "hnsw", "--recall", "0.9", "-k", "3")
    assert result.exit_code == 0, result.output
    assert "index tuned: recall@10" in result.output and "ef_search=" in result.output
    result = invoke("search", "--store", store, "--text", "x", "--half-kernel", "fast")
    assert result.exit_code != 0 and "unknown --half-kernel 'fast'" in error_line(result.exception)
    if not torch.cuda.is_available():
        result = invoke("search", "--store", store, "--text", "x", "--device", "cuda")
        assert result.exit_code != 0 and "Traceback" not in result.output
