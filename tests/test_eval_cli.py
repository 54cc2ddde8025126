"""`clipmath eval` and its harness end to end on the tiny model, on each benchmark's real annotation samples with
generated images: metrics equal a direct computation, ids line up (an oracle composer scores 100), the feature
cache makes a second run encode nothing, test splits give submissions that pass the validator, and
`clipmath train --val-dataset` validates with the same numbers `clipmath eval --checkpoint` prints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipmath.cli import app, main
from clipmath.compose import Composer, CompositionQuery, QueryEmbeddings, get_composer
from clipmath.data import load_circo, load_cirr
from clipmath.eval import (
    BenchmarkValidator,
    EmbeddingScores,
    EvalConfig,
    evaluate,
    evaluate_cir,
    evaluate_simat,
    load_benchmark,
    resolve_methods,
    retrieve_simat,
)
from clipmath.eval.submissions import validate_submission_file
from clipmath.store import Gallery
from tests.benchmark_folders import build_circo, build_cirr, build_fashioniq, build_simat

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()
TINY = ["--model", "tiny-random-clip", "--quiet"]
QUIET = EvalConfig(progress=False)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("benchmarks")
    return {
        "cirr": build_cirr(base / "CIRR"),
        "fashioniq": build_fashioniq(base / "FashionIQ"),
        "circo": build_circo(base / "CIRCO"),
        "simat": build_simat(base / "SIMAT", queries=25),
    }


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-cache")


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, ["eval", *args, *TINY, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pil(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


class CountingImages:
    """Wraps ``encoder.encode_images`` and ``encode_files`` (the indexer's) and counts the images they are given."""

    def __init__(self, encoder, monkeypatch) -> None:
        self.images = 0
        for name in ("encode_images", "encode_files"):
            monkeypatch.setattr(encoder, name, self._counting(getattr(encoder, name)))

    def _counting(self, original):
        def counting(images, *args, **kwargs):
            self.images += len(images)
            return original(images, *args, **kwargs)

        return counting


class LookupComposer(Composer):
    """A test oracle: per ``(reference id, key)``, the vector it was told to return (the query's answer)."""

    name = "lookup"
    description = "test oracle"

    def __init__(self, answers: dict, needs: tuple[str, ...], key: str) -> None:
        self.answers, self.needs, self.key = answers, needs, key

    def compose(self, encoder, queries, batch_size=64):
        return np.stack([self.answers[(q.reference_id, getattr(q, self.key))] for q in queries])

    def combine(self, embeddings: QueryEmbeddings) -> np.ndarray:  # pragma: no cover - compose is overridden
        raise NotImplementedError


class RecordingOracle:
    """A SIMAT oracle that accepts everything and remembers what was retrieved."""

    label = "recording"

    def __init__(self) -> None:
        self.retrieved: list[str] = []

    def judge(self, dataset, queries, retrieved_ids):
        self.retrieved = list(retrieved_ids)
        return np.ones(len(queries), dtype=bool)


# ---- the harness (Python API) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sum", "image", "text"])
def test_cirr_metrics_equal_a_direct_computation(tiny_encoder, roots, tmp_path, method):
    (dataset,) = load_benchmark("cirr", roots["cirr"])
    report = evaluate(dataset, tiny_encoder, [method], tmp_path, QUIET)
    gallery = tiny_encoder.encode_images([pil(dataset.image_path(i)) for i in dataset.gallery_ids])
    queries = [CompositionQuery(reference=dataset.image_path(q.reference_id), text=q.caption) for q in dataset.queries]
    direct = evaluate_cir(dataset, EmbeddingScores(get_composer(method).compose(tiny_encoder, queries), gallery))
    row = report.row(method)
    assert list(row.metrics) == ["R@1", "R@5", "R@10", "R@50", "R_subset@1", "R_subset@2", "R_subset@3", "Avg"]
    assert row.metrics == pytest.approx(direct.metrics)
    assert (row.dataset, row.split, row.num_queries) == ("cirr", "val", 120)


def test_second_run_encodes_no_image_and_references_are_never_encoded(tiny_encoder, roots, tmp_path, monkeypatch):
    datasets = load_benchmark("fashioniq", roots["fashioniq"])
    gallery_size = len({i for d in datasets for i in d.gallery_ids})
    counter = CountingImages(tiny_encoder, monkeypatch)
    first = evaluate(datasets, tiny_encoder, ["sum", "image"], tmp_path, QUIET)
    assert counter.images == first.encoded_images == first.gallery_images == gallery_size  # no reference re-encoded
    second = evaluate(datasets, tiny_encoder, ["sum", "image"], tmp_path, QUIET)
    assert counter.images == gallery_size and second.encoded_images == 0
    assert [r.metrics for r in second.rows] == [r.metrics for r in first.rows]
    assert second.store == first.store and Gallery.open(first.store).info().count == gallery_size


def test_fashioniq_rows_average_and_caption_orders(tiny_encoder, roots, tmp_path):
    datasets = load_benchmark("fashioniq", roots["fashioniq"])
    report = evaluate(datasets, tiny_encoder, ["text"], tmp_path, QUIET)
    rows = {r.dataset: r.metrics for r in report.rows}
    assert list(rows) == ["fashioniq-dress", "fashioniq-shirt", "fashioniq-toptee", "fashioniq-average"]
    for key in ("R@10", "R@50"):
        assert rows["fashioniq-average"][key] == pytest.approx(np.mean([rows[f"fashioniq-{c}"][key] for c in
                                                                        ("dress", "shirt", "toptee")]))  # fmt: skip
    dress = datasets[0]
    gallery = tiny_encoder.encode_images([pil(dress.image_path(i)) for i in dress.gallery_ids])
    both = tiny_encoder.encode_texts([q.caption for q in dress.queries]) + tiny_encoder.encode_texts(
        [q.extra["caption_reversed"] for q in dress.queries]
    )
    direct = evaluate_cir(dress, EmbeddingScores(both / np.linalg.norm(both, axis=1, keepdims=True), gallery))
    assert rows["fashioniq-dress"] == pytest.approx(direct.metrics)
    one = evaluate(dress, tiny_encoder, ["text"], tmp_path, EvalConfig(progress=False, caption_orders="one"))
    single = evaluate_cir(
        dress, EmbeddingScores(tiny_encoder.encode_texts([q.caption for q in dress.queries]), gallery)
    )
    assert one.row("text").metrics == pytest.approx(single.metrics)


@pytest.mark.parametrize("benchmark", ["cirr", "fashioniq", "circo"])
def test_an_oracle_composer_scores_perfectly(tiny_encoder, roots, tmp_path, benchmark):
    """Queries, references and gallery rows line up: returning each query's target vector finds it first."""
    datasets = load_benchmark(benchmark, roots[benchmark])
    validator = BenchmarkValidator(datasets, tiny_encoder, tmp_path, QUIET)
    answers = {}
    for dataset in validator.prepared().datasets:
        vectors = validator.prepared().features.vectors[dataset.name]
        for q in dataset.queries:
            target = vectors[dataset.gallery_row[q.target_ids[0]]]
            for text in (q.caption, q.extra.get("caption_reversed")):
                answers[(q.reference_id, text)] = target
    metrics = validator(LookupComposer(answers, ("reference", "text"), "text"))
    headline = {"cirr": ["R@1", "R_subset@1"], "fashioniq": ["average/R@10", "dress/R@10"], "circo": ["R@5"]}
    for name in headline[benchmark]:
        assert metrics[name] == pytest.approx(100.0), name
    assert validator.monitor in metrics
    if benchmark == "circo":  # one ground truth of several found first: AP@5 = 1/n_gt per query, never above
        assert 0 < metrics["mAP@5"] < 100


def test_simat_delta_at_each_lambda_and_label_oracle(tiny_encoder, roots, tmp_path):
    (dataset,) = load_benchmark("simat", roots["simat"], "test")
    methods, skipped = resolve_methods(["all"])
    report = evaluate(dataset, tiny_encoder, methods, tmp_path, EvalConfig(lams=(1.0, 2.0), progress=False), skipped)
    assert [r.label for r in report.rows] == ["image", "delta (λ=1)", "delta (λ=2)"]
    assert set(report.skipped) >= {"sum", "text", "expr", "combiner", "adapted-delta", "searle", "oti"}
    assert "caption" in report.skipped["sum"] and "checkpoint" in report.skipped["adapted-delta"]
    gallery = tiny_encoder.encode_images([pil(dataset.image_path(i)) for i in dataset.gallery_ids])
    row = dataset.gallery_row
    source = tiny_encoder.encode_texts([q.source_word for q in dataset.queries])
    target = tiny_encoder.encode_texts([q.target_word for q in dataset.queries])
    query = gallery[[row[q.source_id] for q in dataset.queries]] + 2.0 * (target - source)
    direct = evaluate_simat(dataset, EmbeddingScores(query / np.linalg.norm(query, axis=1, keepdims=True), gallery))
    assert report.row("delta", lam=2.0).metrics["score"] == pytest.approx(direct.score)
    assert report.oracle == "ground-truth labels" and report.to_dict()["oracle"] == "ground-truth labels"


def test_learned_method_with_gallery_transform_matches_a_direct_computation(tiny_encoder, roots, tmp_path):
    """adapted-delta from a checkpoint: the image head maps the cached gallery too, the text head the words."""
    import torch

    from clipmath.compose.adapted_delta import AdaptationHeads
    from clipmath.compose.checkpoint import describe, save_checkpoint

    torch.manual_seed(3)
    heads = AdaptationHeads(tiny_encoder.dim)
    with torch.no_grad():
        for head in (heads.image, heads.text):
            head.weight.add_(0.5 * torch.randn_like(head.weight))
    checkpoint = describe("adapter", tiny_encoder.info, tiny_encoder.transform.key, {})
    checkpoint.tensors = dict(heads.state_dict())
    path = save_checkpoint(checkpoint, tmp_path / "heads")
    (dataset,) = load_benchmark("simat", roots["simat"], "test")
    oracle = RecordingOracle()
    config = EvalConfig(lams=(2.0,), oracle=oracle, progress=False)
    report = evaluate(dataset, tiny_encoder, {"adapted-delta": str(path)}, tmp_path, config)

    def apply(layer, x):
        y = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    gallery = tiny_encoder.encode_images([pil(dataset.image_path(i)) for i in dataset.gallery_ids])
    row = dataset.gallery_row
    source = apply(heads.text, tiny_encoder.encode_texts([q.source_word for q in dataset.queries]))
    target = apply(heads.text, tiny_encoder.encode_texts([q.target_word for q in dataset.queries]))
    query = apply(heads.image, gallery[[row[q.source_id] for q in dataset.queries]]) + 2.0 * (target - source)
    retrieved = retrieve_simat(dataset, EmbeddingScores(query, apply(heads.image, gallery)))
    words = tiny_encoder.encode_texts([q.target_word for q in dataset.queries]) - tiny_encoder.encode_texts(
        [q.source_word for q in dataset.queries]
    )
    plain = retrieve_simat(
        dataset, EmbeddingScores(gallery[[row[q.source_id] for q in dataset.queries]] + 2 * words, gallery)
    )
    assert oracle.retrieved == retrieved != plain  # plain delta retrieves other images
    assert report.row("adapted-delta", lam=2.0).checkpoint == str(path)


def test_simat_oracle_composer_scores_perfectly(tiny_encoder, roots, tmp_path):
    (dataset,) = load_benchmark("simat", roots["simat"], "dev")
    validator = BenchmarkValidator(dataset, tiny_encoder, tmp_path, QUIET)
    vectors = validator.prepared().features.vectors["simat"]
    answers = {}
    for q in dataset.queries:
        answer = next(i for i in dataset.target_image_ids(q) if i != q.source_id)
        answers[(q.source_id, q.target_word)] = vectors[dataset.gallery_row[answer]]
    metrics = validator(LookupComposer(answers, ("reference", "source", "target", "lam"), "target"))
    assert metrics["score"] == pytest.approx(100.0)


def test_validator_refuses_test_splits_and_methods_without_inputs(tiny_encoder, roots):
    with pytest.raises(Exception, match="no ground truth"):
        BenchmarkValidator(load_benchmark("cirr", roots["cirr"], "test1"), tiny_encoder)
    validator = BenchmarkValidator(load_benchmark("cirr", roots["cirr"]), tiny_encoder)
    with pytest.raises(Exception, match="source word"):
        validator.check_inputs(("reference", "source", "target", "lam"), "adapter")


# ---- the command line ------------------------------------------------------------------------------------------
def test_table_names_the_model_and_warns_about_random_weights(roots, shared_cache):
    result = runner.invoke(
        app, ["eval", "--dataset", "cirr", "--path", str(roots["cirr"]), "--method", "sum", "--cache",
              str(shared_cache), *TINY],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("cirr val", "R_subset@1", "Avg", "sum", "tiny-random-clip", "RANDOM WEIGHTS", "not quality figures"):
        assert text in result.stdout, text


def test_methods_all_json_side_by_side_and_cached(roots, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMATH_LM", "tiny-random-lm")  # the rewrite methods' captions: plumbing only
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path / "home"))
    args = ["--dataset", "cirr", "--path", str(roots["cirr"]), "--methods", "all", "--cache", str(tmp_path),
            "--limit", "3"]  # fmt: skip
    first = invoke_json(*args)
    assert [r["method"] for r in first["results"]] == ["image", "text", "sum", "cirevl", "ldre", "seize", "pdv"]
    assert {"delta", "expr", "combiner", "adapted-delta", "searle", "oti"} <= set(first["skipped"])
    assert first["encoded_images"] == first["gallery_images"] == 217
    assert "RANDOM WEIGHTS" in first["model"] and first["pretrained"] is False
    assert any("not quality figures" in note for note in first["notes"])
    second = invoke_json(*args)
    assert second["encoded_images"] == 0 and second["results"] == [
        {**r, "seconds": s["seconds"]} for r, s in zip(first["results"], second["results"])
    ]


def test_default_cache_location_is_keyed_by_model_dataset_split_and_preprocessing(roots, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path))
    clip = invoke_json("--dataset", "cirr", "--path", str(roots["cirr"]), "--limit", "5")
    pad = invoke_json("--dataset", "cirr", "--path", str(roots["cirr"]), "--limit", "5", "--preprocessing", "targetpad")
    assert clip["cache"].startswith(str(tmp_path / "eval" / "tiny-random-clip" / "cirr-val-clip-"))
    assert pad["cache"].startswith(str(tmp_path / "eval" / "tiny-random-clip" / "cirr-val-targetpad1.25-"))
    assert (clip["preprocessing"], pad["preprocessing"]) == ("clip", "targetpad1.25")
    assert Gallery.open(pad["cache"]).info().preprocessing == "targetpad1.25"
    assert pad["encoded_images"] == 217 and clip["queries"] == 5
    assert any("first 5 queries" in note for note in clip["notes"])


def test_targetpad_changes_the_features_of_non_square_images(roots, tmp_path):
    root = tmp_path / "CIRR"
    shutil.copytree(roots["cirr"], root)
    for path in sorted((root / "dev").glob("*.png"))[:40]:  # wide images: targetpad pads them to squares
        Image.open(path).resize((48, 16)).save(path)
    common = ["--dataset", "cirr", "--path", str(root), "--method", "image", "--cache", str(tmp_path / "c")]
    clip = invoke_json(*common)
    pad = invoke_json(*common, "--preprocessing", "targetpad")
    assert clip["cache"] != pad["cache"]
    with Gallery.open(clip["cache"]) as a, Gallery.open(pad["cache"]) as b:
        va, vb = a.snapshot(), b.snapshot()
        rows_a, rows_b = dict(zip(va.ids, va.vectors)), dict(zip(vb.ids, vb.vectors))
    changed = [i for i in rows_a if not np.allclose(rows_a[i], rows_b[i], atol=1e-6)]
    assert changed and all(Image.open(root / i).size == (48, 16) for i in changed)


def test_fashioniq_category_and_caption_order_options(roots, shared_cache):
    common = ["--dataset", "fashioniq", "--path", str(roots["fashioniq"]), "--cache", str(shared_cache)]
    dress = invoke_json(*common, "--category", "dress", "--method", "text")
    assert [r["dataset"] for r in dress["results"]] == ["fashioniq-dress"]
    full = invoke_json(*common, "--method", "text")
    assert [r["dataset"] for r in full["results"]][-1] == "fashioniq-average"
    assert full["results"][0]["metrics"] == dress["results"][0]["metrics"]
    assert full["caption_orders"] == "both"
    one = invoke_json(*common, "--category", "dress", "--method", "text", "--caption-orders", "one")
    assert one["caption_orders"] == "one" and one["encoded_images"] == 0


def test_benchmarks_lists_the_registry_as_table_or_json():
    from clipmath.eval import BENCHMARKS

    listed = json.loads(runner.invoke(app, ["benchmarks", "--json"]).stdout)
    assert [entry["name"] for entry in listed] == BENCHMARKS.names()
    assert BENCHMARKS.names() == ["fashioniq", "cirr", "circo", "simat", "clevr-change", "spot-the-diff"]
    simat, cirr = listed[3], listed[1]
    assert (simat["default_method"], simat["monitor"], simat["default_split"]) == ("delta", "score", "test")
    assert simat["oracles"] == ["labels", "oscar"] and simat["submission_server"] is None and simat["takes_lam"]
    assert cirr["submission_server"] == "https://cirr.cecs.anu.edu.au/" and cirr["splits"] == ["val", "test1", "train"]
    shown = runner.invoke(app, ["benchmarks"])
    assert shown.exit_code == 0, shown.output
    for entry in listed:
        assert all(entry[fact] in shown.stdout for fact in ("name", "title", "monitor", "description"))
    helped = " ".join(runner.invoke(app, ["eval", "--help"]).stdout.replace("│", " ").split())
    assert "Benchmark: fashioniq, cirr, circo, simat, clevr-change, spot-the-diff" in helped
    assert "default: val on fashioniq, val on cirr, val on circo, test on simat, test on clevr-change" in helped


def test_simat_lambdas_and_limit(roots, shared_cache):
    report = invoke_json("--dataset", "simat", "--path", str(roots["simat"]), "--lam", "1", "2", "--limit", "10",
                         "--methods", "delta,image", "--cache", str(shared_cache))  # fmt: skip
    assert [(r["method"], r["lam"]) for r in report["results"]] == [("delta", 1.0), ("delta", 2.0), ("image", None)]
    assert report["split"] == "test" and report["queries"] == 10
    assert all(0 <= r["metrics"]["score"] <= 100 for r in report["results"])


def test_simat_oscar_oracle_reads_the_released_matrix(roots, tmp_path):
    """``--oracle oscar`` judges with simat_db/oscar_similarity_matrix.pt (here a synthetic one: image rows whose
    id is even accept every caption, so the score is the weighted share of queries that retrieved such an image)."""
    import torch

    root = tmp_path / "SIMAT"
    shutil.copytree(roots["simat"], root)
    (dataset,) = load_benchmark("simat", root, "test")
    captions = len((root / "simat_db" / "captions.txt").read_text().splitlines())
    accepted = torch.tensor([int(i) % 2 == 0 for i in dataset.gallery_ids], dtype=torch.float32)
    torch.save(accepted[:, None].expand(-1, captions).clone(), root / "simat_db" / "oscar_similarity_matrix.pt")
    common = ["--dataset", "simat", "--path", str(root), "--method", "image", "--cache", str(tmp_path / "c")]
    labels = invoke_json(*common)
    oscar = invoke_json(*common, "--oracle", "oscar")
    assert (oscar["oracle"], labels["oracle"]) == ("OSCAR", "ground-truth labels")
    assert oscar["encoded_images"] == 0 and oscar["results"][0]["metrics"] != labels["results"][0]["metrics"]
    assert 0 < oscar["results"][0]["metrics"]["score"] < 100


def test_cirr_test1_submission_passes_the_validator(roots, tmp_path):
    out = tmp_path / "sub" / "run.json"
    report = invoke_json("--dataset", "cirr", "--path", str(roots["cirr"]), "--split", "test1", "--method", "sum",
                         "--submission", str(out), "--cache", str(tmp_path / "c"))  # fmt: skip
    files = sorted(Path(p).name for p in report["submissions"])
    assert files == ["run_cirr_recall.json", "run_cirr_recall_subset.json"]
    test1 = load_cirr(roots["cirr"], "test1")
    kinds = {validate_submission_file(out.parent / name, test1) for name in files}
    assert kinds == {"cirr:recall", "cirr:recall_subset"}
    assert report["results"][0]["metrics"] == {} and any("no ground truth" in n for n in report["notes"])


def test_circo_test_submission_per_method_passes_the_validator(roots, tmp_path):
    out = tmp_path / "circo.json"
    report = invoke_json("--dataset", "circo", "--path", str(roots["circo"]), "--split", "test",
                         "--methods", "sum,text", "--submission", str(out), "--cache", str(tmp_path / "c"))  # fmt: skip
    assert sorted(Path(p).name for p in report["submissions"]) == ["circo-sum.json", "circo-text.json"]
    test = load_circo(roots["circo"], "test")
    for path in report["submissions"]:
        assert validate_submission_file(path, test) == "circo"
        assert all(len(ids) == 50 for ids in json.loads(Path(path).read_text()).values())


@pytest.fixture(scope="module")
def incomplete_cirr(roots, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken") / "CIRR"
    shutil.copytree(roots["cirr"], root)
    next((root / "dev").glob("*.png")).unlink()
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "cirr", "--path", "{broken}"], "gallery images are missing"),
        (["--dataset", "cirr", "--path", "{tmp}/nowhere"], "does not exist"),
        (["--dataset", "circo", "--path", "{cirr}"], "incomplete: missing annotations/val.json"),
        (["--dataset", "coco", "--path", "{cirr}"], "unknown benchmark"),
        (["--dataset", "cirr", "--path", "{cirr}", "--split", "test1"], "give a --submission path"),
        (["--dataset", "cirr", "--path", "{cirr}", "--method", "delta"], "no selected method runs on cirr"),
        (["--dataset", "cirr", "--path", "{cirr}", "--method", "combiner"], "needs a checkpoint"),
        (["--dataset", "cirr", "--path", "{cirr}", "--lam", "2"], "SIMAT only"),
        (["--dataset", "cirr", "--path", "{cirr}", "--preprocessing", "squash"], "--preprocessing is one of"),
        (["--dataset", "simat", "--path", "{simat}", "--oracle", "oscar"], "oscar_similarity_matrix.pt not found"),
        (["--dataset", "simat", "--path", "{simat}", "--oracle", "human"], "use labels, oscar"),
        (["--dataset", "cirr", "--path", "{cirr}", "--oracle", "oscar"], "'oracle' applies to SIMAT only"),
        (["--dataset", "fashioniq", "--path", "{cirr}", "--submission", "x.json"], "only CIRR and CIRCO"),
        (["--dataset", "cirr", "--path", "{cirr}", "--method", "nope"], "unknown method"),
    ],
)
def test_user_errors_are_one_line_with_status_2(roots, incomplete_cirr, tmp_path, monkeypatch, capsys, args, message):
    values = {"broken": incomplete_cirr, "cirr": roots["cirr"], "simat": roots["simat"], "tmp": tmp_path}
    argv = ["clipmath", "eval", *[a.format(**values) for a in args], "--cache", str(tmp_path / "c"), *TINY]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    last = captured.err.splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in captured.err and captured.err.count("error:") == 1


# ---- clipmath train --val-dataset ------------------------------------------------------------------------------
def test_train_validates_on_a_benchmark_like_eval(roots, tmp_path):
    root = roots["cirr"]
    (dataset,) = load_benchmark("cirr", root)
    triplets = [
        {"reference": str(dataset.image_path(q.reference_id)), "caption": q.caption,
         "target": str(dataset.image_path(q.target_ids[0]))}
        for q in dataset.queries[:32]
    ]  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(triplets))
    checkpoint = tmp_path / "combiner"
    result = runner.invoke(
        app, ["train", "combiner", "--triplets", str(tmp_path / "train.json"), "--output", str(checkpoint),
              "--val-dataset", "cirr", "--val-path", str(root), "--epochs", "2", "--batch-size", "16",
              "--projection-dim", "16", "--hidden-dim", "32", *TINY, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    history = json.loads(result.stdout)["runs"][0]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and "R_subset@1" in history[-1]["metrics"]
    report = invoke_json("--dataset", "cirr", "--path", str(root), "--method", "combiner",
                         "--checkpoint", str(checkpoint), "--cache", str(tmp_path / "c"))  # fmt: skip
    assert report["results"][0]["checkpoint"] == str(checkpoint)
    assert report["results"][0]["metrics"] == pytest.approx(history[-1]["metrics"])


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("adapter", ["--val-dataset", "cirr", "--val-path", "{cirr}"], "adapter cannot be validated on cirr"),
        ("combiner", ["--val-dataset", "cirr"], "--val-dataset needs --val-path"),
        ("combiner", ["--val-path", "{cirr}"], "go with --val-dataset"),
        ("combiner", ["--val-dataset", "cirr", "--val-path", "{cirr}", "--val-split", "test1"], "no ground truth"),
    ],
)
def test_train_val_dataset_errors(roots, tmp_path, monkeypatch, capsys, command, extra, message):
    (dataset,) = load_benchmark("cirr", roots["cirr"])
    query = dataset.queries[0]
    pair = {"reference": str(dataset.image_path(query.reference_id)), "caption": query.caption,
            "target": str(dataset.image_path(query.target_ids[0]))}  # fmt: skip
    (tmp_path / "t.json").write_text(json.dumps([pair, pair]))
    (tmp_path / "c.tsv").write_text(f"{Path(pair['reference']).name}\ta photo\n")
    data = {
        "adapter": ["--images", str(Path(pair["reference"]).parent), "--captions", str(tmp_path / "c.tsv")],
        "combiner": ["--triplets", str(tmp_path / "t.json")],
    }[command]
    argv = ["clipmath", "train", command, *data, "--output", str(tmp_path / "o"), *TINY,
            *[a.format(cirr=roots["cirr"]) for a in extra]]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    last = capsys.readouterr().err.splitlines()[-1]
    assert exit_info.value.code == 2 and last.startswith("error: ") and message in last


def test_an_eval_job_is_checked_before_a_model_loads_and_runs_from_python(tiny_encoder, roots, tmp_path):
    """The sequence every front end runs, as core calls: plan (rules, annotations), then run with an encoder."""
    from clipmath.errors import ClipmathError
    from clipmath.eval import EvalJob, plan_eval, run_eval

    with pytest.raises(ClipmathError, match="no ground truth: give a 'submission' path"):
        plan_eval(EvalJob("cirr", roots["cirr"], split="test1"), progress=False)
    with pytest.raises(ClipmathError, match="λ"):
        plan_eval(EvalJob("cirr", roots["cirr"], lams=(2.0,)), progress=False)
    plan = plan_eval(EvalJob("cirr", roots["cirr"], methods=("sum", "image"), cache=tmp_path), progress=False)
    assert plan.split == "val" and list(plan.methods) == ["sum", "image"]
    report, written = run_eval(plan, tiny_encoder)
    direct = evaluate(plan.datasets, tiny_encoder, ["sum", "image"], tmp_path, QUIET)
    metrics = [(r["method"], r["metrics"]) for r in report.to_dict()["results"]]
    assert written == [] and metrics == [(r["method"], r["metrics"]) for r in direct.to_dict()["results"]]


def test_eval_takes_a_method_variant_and_reports_it_by_its_full_name(roots, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path / "rewrites"))
    variant = "cirevl[captions=1, language_model=tiny-random-lm, cache=no]"
    report = invoke_json("--dataset", "cirr", "--path", str(roots["cirr"]), "--method", variant, "--method", "sum",
                         "--limit", "3", "--cache", str(tmp_path))  # fmt: skip
    assert [row["method"] for row in report["results"]] == [variant, "sum"]
    bad = runner.invoke(app, ["eval", "-d", "cirr", "-p", str(roots["cirr"]), "--method", "cirevx[captions=1]", *TINY])
    assert "unknown method 'cirevx[captions=1]'" in str(bad.exception)
