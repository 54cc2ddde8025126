"""Near-duplicate groups: copies of one photo (resized, re-encoded) are one group with the original kept first;
other photos are in no group; exact and approximate self-joins agree; nothing is deleted."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipmath.cli import app
from clipmath.errors import SearchError
from clipmath.search.duplicates import duplicate_groups
from clipmath.store import Gallery, index_folder
from clipmath.store.duplicates import find_duplicates
from tests.conftest import GALLERY

runner = CliRunner()
PHOTOS = sorted((GALLERY / "coco").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def photo_store(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("dups") / "photos"
    folder.mkdir()
    for i, path in enumerate(PHOTOS):
        Image.open(path).convert("RGB").save(folder / f"p{i}.png")
    original = Image.open(PHOTOS[0]).convert("RGB")
    original.resize((original.width // 2, original.height // 2)).save(folder / "p0_half.jpg", quality=85)
    original.resize((original.width * 3 // 4, original.height * 3 // 4)).save(folder / "p0_small.jpg", quality=70)
    store = folder.parent / "store"
    index_folder(store, folder, tiny_encoder, progress=False)
    snapshot = Gallery.open(store).snapshot()
    sims = np.asarray(snapshot.vectors) @ np.asarray(snapshot.vectors).T
    copies = [snapshot.ids.index(name) for name in ("p0.png", "p0_half.jpg", "p0_small.jpg")]
    inside = min(sims[a, b] for a in copies for b in copies)
    others = max(sims[a, b] for a in range(len(sims)) for b in range(len(sims)) if a != b and not (
        a in copies and b in copies))  # fmt: skip
    assert inside > others, "the copies must be closer to each other than any other pair (else the test is moot)"
    return store, folder, float((inside + others) / 2)


def test_copies_are_one_group_with_the_largest_kept_first(photo_store):
    store, folder, threshold = photo_store
    before = sorted(p.name for p in folder.iterdir())
    for kind in ("exact", "hnsw"):
        report = find_duplicates(store, threshold, neighbours=3, kind=kind)
        assert [[c.id for c in group] for group in report.groups] == [["p0.png", "p0_small.jpg", "p0_half.jpg"]]
        assert report.redundant == 2 and report.scores[0] >= threshold and report.items == len(before)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing deleted or moved


def test_chains_join_and_bad_settings_are_one_line():
    vectors = np.eye(4, dtype=np.float32)
    vectors[1] = np.array([0.96, 0.28, 0, 0], dtype=np.float32)  # a ~ b
    vectors[2] = np.array([0.84, 0.54, 0, 0], dtype=np.float32)  # b ~ c, a !~ c
    vectors[1:3] /= np.linalg.norm(vectors[1:3], axis=1, keepdims=True)
    groups = duplicate_groups(vectors, threshold=0.95, neighbours=1)
    assert [g.rows for g in groups] == [(0, 1, 2)] and groups[0].score < 0.97
    assert duplicate_groups(vectors[:1]) == []
    with pytest.raises(SearchError, match="'threshold'"):
        duplicate_groups(vectors, threshold=2.0)
    with pytest.raises(SearchError, match="'neighbours'"):
        duplicate_groups(vectors, neighbours=0)


def test_the_command_prints_json_and_csv(photo_store, tmp_path):
    store, _, threshold = photo_store
    shown = runner.invoke(app, ["duplicates", str(store), "--threshold", str(threshold), "--json"])
    assert shown.exit_code == 0, shown.output
    payload = json.loads(shown.stdout)
    assert payload["redundant"] == 2 and payload["groups"][0][0]["id"] == "p0.png"
    out = tmp_path / "dups.csv"
    written = runner.invoke(app, ["duplicates", str(store), "--threshold", str(threshold), "--csv", str(out)])
    assert written.exit_code == 0 and "1 groups of near-duplicates" in written.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["id"], r["keep"]) for r in rows] == [("p0.png", "1"), ("p0_small.jpg", "0"), ("p0_half.jpg", "0")]
    assert runner.invoke(app, ["duplicates", str(store), "--threshold", "1.5"]).exit_code == 2
