"""Near-duplicate groups: planted pairs found (exact and HNSW self-join), best copy suggested, CLI JSON/CSV."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipmath.store import Gallery, index_folder
from clipmath.store.duplicates import duplicate_groups, duplicate_pairs
from clipmath.store.photometa import PhotoMeta


def planted(rows: int, dim: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    copies = rng.choice(rows, size=2 * pairs, replace=False)
    truth = set()
    for a, b in copies.reshape(-1, 2):
        vectors[b] = vectors[a] + 0.05 * rng.standard_normal(dim).astype(np.float32) * np.linalg.norm(vectors[a]) / 8
        truth.add((min(a, b), max(a, b)))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), truth


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_planted_pairs_are_found_with_precision_and_recall(kind):
    vectors, truth = planted(6000, 64, 100)
    found = {(a, b) for a, b, _ in duplicate_pairs(vectors, 0.95, kind=kind)}
    hits = len(found & truth)
    assert hits / len(found) >= 0.99 and hits / len(truth) >= 0.99


def test_groups_join_chains_and_suggest_the_biggest_copy():
    ids = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    metas = {
        i: PhotoMeta(i, "", "2020-01-01T00:00:00", "exif", None, w, w, None, 10) for i, w in zip(ids, (10, 40, 20, 5))
    }
    groups = duplicate_groups(ids, [(0, 1, 0.99), (1, 2, 0.97)], metas)
    assert len(groups) == 1 and groups[0].ids == ["b.jpg", "c.jpg", "a.jpg"] and groups[0].best == "b.jpg"
    assert groups[0].min_score == 0.97


def test_cli_reports_groups_as_json_and_csv_and_deletes_nothing(tmp_path, tiny_encoder):
    from clipmath.cli import app

    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray((rng.random((30, 30, 3)) * 255).astype(np.uint8)).save(root / f"p{i}.png")
    shutil.copy(root / "p2.png", root / "copy_of_p2.png")
    index_folder(tmp_path / "s", root, tiny_encoder, progress=False)
    runner = CliRunner()
    result = runner.invoke(app, ["duplicates", str(tmp_path / "s"), "--threshold", "0.999", "--json"])
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)["groups"]
    assert [sorted(g["ids"]) for g in groups] == [["copy_of_p2.png", "p2.png"]]
    table = runner.invoke(app, ["duplicates", str(tmp_path / "s"), "--threshold", "0.999", "--csv"])
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert {r["id"] for r in rows} == {"copy_of_p2.png", "p2.png"} and sum(r["best"] == "True" for r in rows) == 1
    assert len(list(root.iterdir())) == 5 and Gallery.open(tmp_path / "s").info().count == 5
