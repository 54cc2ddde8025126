"""Near-duplicate groups: planted pairs found (exact and clustered self-join), best copy suggested, CLI JSON/CSV."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipmath.errors import ClipmathError
from clipmath.store import Gallery, duplicates, index_folder
from clipmath.store.duplicates import DuplicateSearch, duplicate_groups, duplicate_pairs
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


@pytest.mark.parametrize("join", ["exact", "clustered"])
def test_planted_pairs_are_found_with_precision_and_recall(join, monkeypatch):
    if join == "clustered":
        monkeypatch.setattr(duplicates, "EXACT_UP_TO", 1000)
    vectors, truth = planted(6000, 64, 100)
    found = duplicate_pairs(vectors, 0.95)
    pairs = {(a, b) for a, b, _ in found}
    hits = len(pairs & truth)
    assert hits / len(pairs) >= 0.99 and hits / len(truth) >= 0.99
    assert all(a < b for a, b, _ in found) and len(pairs) == len(found)  # each pair once, low row first
    for a, b, score in found:  # scores are exact inner products
        assert score == pytest.approx(float(vectors[a] @ vectors[b]), abs=1e-5)


def test_clustered_join_finds_every_pair_of_a_many_copy_group(monkeypatch):
    """Twelve copies of one image are 66 pairs: the join has no neighbour cap to miss some of them."""
    monkeypatch.setattr(duplicates, "EXACT_UP_TO", 100)
    vectors, _ = planted(3000, 32, 0)
    vectors[100:112] = vectors[7]
    found = {(a, b) for a, b, _ in duplicate_pairs(vectors, DuplicateSearch(threshold=0.999))}
    group = [7, *range(100, 112)]
    assert {(a, b) for a in group for b in group if a < b} <= found


def test_a_threshold_outside_cosine_is_refused_by_name():
    with pytest.raises(ClipmathError, match="'threshold'"):
        DuplicateSearch(threshold=1.5)


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
