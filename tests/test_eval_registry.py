"""The benchmark registry: built-in specs carry the facts the front ends need, and a toy benchmark registered
through the public API only (a retrieval one, and one scored by its own protocol like a captioning benchmark)
evaluates through ``clipmath.eval`` with no other file changed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipmath
import clipmath.data
from clipmath.compose import get_composer
from clipmath.data import CIRDataset, CIRQuery, ImageCollection
from clipmath.errors import ClipmathError, DatasetError, SubmissionError
from clipmath.eval import (
    BENCHMARKS,
    BenchmarkError,
    BenchmarkProtocol,
    BenchmarkSpec,
    BenchmarkValidator,
    EmbeddingScores,
    EvalConfig,
    MethodOutcome,
    evaluate,
    evaluate_cir,
    find_benchmark,
    load_benchmark,
    resolve_methods,
    write_submissions,
)
from tests.benchmark_folders import build_fashioniq, write_image

QUIET = EvalConfig(progress=False)


# ---- built-in specs --------------------------------------------------------------------------------------------
def test_builtin_specs_hold_the_facts_once():
    assert BENCHMARKS.names() == ["fashioniq", "cirr", "circo", "simat", "clevr-change", "spot-the-diff"]
    facts = {s.name: (s.default_split, s.default_method, s.monitor) for s in BENCHMARKS.list()}
    assert facts == {"fashioniq": ("val", "sum", "average/R@10"), "cirr": ("val", "sum", "Avg"),
                     "circo": ("val", "sum", "mAP@10"), "simat": ("test", "delta", "score"),
                     "clevr-change": ("test", "clip4idc", "overall/CIDEr"),
                     "spot-the-diff": ("test", "clip4idc", "overall/CIDEr")}  # fmt: skip
    assert [s.name for s in BENCHMARKS.list() if s.submission] == ["cirr", "circo"]
    assert [s.name for s in BENCHMARKS.list() if s.takes_lam] == ["simat"]
    assert BENCHMARKS.get("simat").default_for_validation() == "dev"
    assert BENCHMARKS.get("cirr").missing_inputs(("reference", "source", "target", "lam")) == (
        "needs a source word, a target word, which cirr queries do not have"
    )
    assert BENCHMARKS.get("simat").missing_inputs(("reference", "source", "target", "lam")) is None


def test_names_variants_and_close_match_errors():
    assert find_benchmark("fashioniq-dress")[1] == "dress"
    assert find_benchmark("FashionIQ:shirt")[1] == "shirt"
    assert find_benchmark("CIRR") == (BENCHMARKS.get("cirr"), None)
    with pytest.raises(BenchmarkError, match="unknown benchmark 'cir'; did you mean 'cirr' or 'circo'"):
        find_benchmark("cir")
    with pytest.raises(BenchmarkError, match="unknown FashionIQ category 'hat'"):
        find_benchmark("fashioniq:hat")
    with pytest.raises(DatasetError, match="unknown benchmark"):  # a BenchmarkError is a DatasetError
        find_benchmark("coco")


def test_domain_rules_are_spec_facts_worded_by_field():
    cirr, fashioniq, simat = (BENCHMARKS.get(n) for n in ("cirr", "fashioniq", "simat"))
    with pytest.raises(BenchmarkError, match="'lams' .* apply to SIMAT only, not CIRR"):
        cirr.check_options(lams=[2.0])
    simat.check_options(lams=[1.0, 2.0])
    with pytest.raises(
        SubmissionError, match="no 'submission' file for FashionIQ: only CIRR and CIRCO have a test server"
    ):
        fashioniq.check_options(submission=True)
    with pytest.raises(SubmissionError, match="'limit' must not be set"):
        cirr.check_options(submission=True, limit=5)
    with pytest.raises(BenchmarkError, match="a category applies to FashionIQ only, not CIRR"):
        cirr.check_options(variant="dress")


def test_oracles_are_spec_facts_chosen_by_name(tmp_path):
    from dataclasses import replace

    from clipmath.eval.simat import GroundTruthLabelOracle

    cirr, simat = BENCHMARKS.get("cirr"), BENCHMARKS.get("simat")
    assert list(simat.oracles) == ["labels", "oscar"] and not cirr.oracles
    assert simat.make_oracle(None, tmp_path) is None and cirr.make_oracle(None, tmp_path) is None
    assert isinstance(simat.make_oracle("labels", tmp_path), GroundTruthLabelOracle)
    with pytest.raises(DatasetError, match="oscar_similarity_matrix.pt not found"):
        simat.make_oracle("oscar", tmp_path)
    with pytest.raises(BenchmarkError, match="an 'oracle' applies to SIMAT only, not CIRR"):
        cirr.make_oracle("labels", tmp_path)
    with pytest.raises(BenchmarkError, match="unknown SIMAT oracle 'human': use labels, oscar"):
        simat.make_oracle("human", tmp_path)
    own = replace(cirr, oracles={"folder": lambda root: ("judge of", root)})  # a factory gets the benchmark folder
    assert own.make_oracle("folder", tmp_path) == ("judge of", tmp_path)


def test_monitor_names_the_key_flat_metrics_gives():
    from types import SimpleNamespace as Named

    from clipmath.eval.validation import monitor_metric

    fashioniq, simat, cirr = (BENCHMARKS.get(n) for n in ("fashioniq", "simat", "cirr"))
    categories = [Named(name=f"fashioniq-{c}") for c in ("dress", "shirt", "toptee")]
    assert monitor_metric(fashioniq, categories, QUIET) == "average/R@10"
    assert monitor_metric(fashioniq, categories[:1], QUIET) == "dress/R@10"
    assert monitor_metric(simat, [Named(name="simat")], EvalConfig(lams=(2.0, 1.0))) == "λ=2/score"
    assert monitor_metric(simat, [Named(name="simat")], QUIET) == "score"
    assert monitor_metric(cirr, [Named(name="cirr-extra")], QUIET) == "extra/Avg"


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), -float("inf")])
def test_config_refuses_non_finite_lambdas(lam):
    with pytest.raises(ClipmathError, match="'lams'.* must be a finite number"):
        EvalConfig(lams=(1.0, lam))


def test_fashioniq_categories_load_by_name_or_option(tmp_path):
    root = build_fashioniq(tmp_path / "FashionIQ")
    assert [d.name for d in load_benchmark("fashioniq-toptee", root, check_images=False)] == ["fashioniq-toptee"]
    assert [d.name for d in load_benchmark("fashioniq", root, category="dress", check_images=False)] == [
        "fashioniq-dress"
    ]
    assert [d.name for d in load_benchmark("fashioniq", root)] == [
        "fashioniq-dress", "fashioniq-shirt", "fashioniq-toptee"
    ]  # fmt: skip
    with pytest.raises(BenchmarkError, match="disagree"):
        load_benchmark("fashioniq-dress", root, category="shirt")
    with pytest.raises(BenchmarkError, match="category applies to FashionIQ only"):
        load_benchmark("cirr", root, category="dress")


def test_the_loaders_import_nothing_above_them():
    """``clipmath.data`` sits below ``clipmath.eval``: loading a benchmark folder never imports the registry."""
    code = (
        "import sys, clipmath.data, clipmath.data.circo, clipmath.data.cirr, clipmath.data.fashioniq, "
        "clipmath.data.simat; print(sorted(m for m in sys.modules if m.startswith('clipmath.eval')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(clipmath.__file__).parents[1])}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
    assert not hasattr(clipmath.data, "load_cir_benchmark")


def test_resolve_methods_is_worded_without_flags():
    chosen, skipped = resolve_methods(["all"], benchmark="cirr")
    assert "sum" in chosen and "combiner" in skipped and "--" not in skipped["combiner"]
    with pytest.raises(ClipmathError, match="only combiner, .* take checkpoints"):
        resolve_methods(["sum"], {"sum": "x"})
    with pytest.raises(ClipmathError, match="which is not selected"):
        resolve_methods(["sum"], {"combiner": "x"})


# ---- a toy retrieval benchmark, registered through the public API ---------------------------------------------
def load_toy(root: Path, split: str, variant: str | None, check_images: bool) -> list[CIRDataset]:
    """Six images; query i: reference img_i, caption, target img_(i+1) (a made-up relation)."""
    names = [f"img_{i}" for i in range(6)]
    queries = [CIRQuery(str(i), names[i], f"next after {i}", (names[(i + 1) % 6],)) for i in range(6)]
    paths = {n: root / f"{n}.png" for n in names}
    return [CIRDataset("toy", "toy", split, root, queries, names, paths, exclude_reference=True)]


@pytest.fixture
def toy_root(tmp_path):
    for i in range(6):
        write_image(tmp_path / "toy" / f"img_{i}.png", f"toy-{i}")
    return tmp_path / "toy"


@pytest.fixture
def toy_benchmark():
    spec = BenchmarkSpec(
        name="toy", title="Toy", description="six images, next-image queries", splits=("val",),
        default_split="val", default_method="image", monitor="R@1", query_fields=("reference", "text"),
        loader=load_toy, protocol="clipmath.eval.scoring:RetrievalProtocol",
    )  # fmt: skip
    BENCHMARKS.register("toy", spec)
    yield spec
    BENCHMARKS.unregister("toy")


def test_a_registered_toy_benchmark_evaluates_like_a_builtin(tiny_encoder, toy_benchmark, toy_root, tmp_path):
    datasets = load_benchmark("toy", toy_root)
    report = evaluate(datasets, tiny_encoder, ["image", "delta"], tmp_path / "cache", QUIET)
    (dataset,) = datasets
    gallery = tiny_encoder.encode_images(
        [Image.open(dataset.image_path(i)).convert("RGB") for i in dataset.gallery_ids]
    )
    queries = gallery[[dataset.gallery_row[q.reference_id] for q in dataset.queries]]
    direct = evaluate_cir(dataset, EmbeddingScores(queries, gallery))
    assert list(report.row("image").metrics) == ["R@1", "R@5", "R@10", "R@50"]
    assert report.row("image").metrics == pytest.approx(direct.metrics)
    assert report.skipped["delta"].startswith("needs a source word")
    assert report.benchmark == "toy" and report.encoded_images == 6
    assert report.table()[0] == ["method", "R@1", "R@5", "R@10", "R@50"]
    validator = BenchmarkValidator(datasets, tiny_encoder, tmp_path / "cache", QUIET)
    assert validator.monitor == "R@1"
    assert validator(get_composer("image")) == pytest.approx(direct.metrics)
    fresh = BenchmarkValidator(datasets, tiny_encoder, config=EvalConfig(progress=False, reencode=True))
    assert fresh(get_composer("image")) == pytest.approx(direct.metrics) and fresh.prepared().features.store is None
    with pytest.raises(SubmissionError, match="no 'submission' file for Toy: only CIRR and CIRCO"):
        write_submissions(report, tmp_path / "out.json")
    with pytest.raises(BenchmarkError, match="'lams' .* apply to SIMAT only, not Toy"):
        evaluate(datasets, tiny_encoder, ["image"], tmp_path / "cache", EvalConfig(lams=(2.0,), progress=False))


def test_the_toy_benchmark_runs_from_the_command_line(toy_benchmark, toy_root, tmp_path):
    """``clipmath eval --dataset toy``: the CLI finds the registered spec (defaults, rules) by name."""
    import json

    from typer.testing import CliRunner

    from clipmath.cli import app

    args = ["eval", "--dataset", "toy", "--path", str(toy_root), "--cache", str(tmp_path / "c"),
            "--model", "tiny-random-clip", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["benchmark"], report["split"]) == ("toy", "val")
    assert [r["method"] for r in report["results"]] == ["image"]  # the spec's default method
    assert list(report["results"][0]["metrics"]) == ["R@1", "R@5", "R@10", "R@50"]
    refused = CliRunner().invoke(app, [*args, "--submission", str(tmp_path / "s.json")])
    assert isinstance(refused.exception, SubmissionError)  # `main()` prints it as a one-line error, status 2
    assert "only CIRR and CIRCO have a test server" in str(refused.exception)
    listed = json.loads(CliRunner().invoke(app, ["benchmarks", "--json"]).stdout)
    assert listed[-1] == toy_benchmark.summary() and (listed[-1]["name"], listed[-1]["monitor"]) == ("toy", "R@1")


# ---- a benchmark scored by its own protocol (the shape of a difference-captioning benchmark) -----------------
@dataclass
class PairDataset(ImageCollection):
    """Image pairs, each with the reference caption of what changed ("same" or "different")."""

    benchmark: str
    name: str
    split: str
    root: Path
    queries: list[tuple[str, str, str]]
    gallery_ids: list[str]
    image_paths: dict[str, Path] = field(default_factory=dict)


def load_pairs(root: Path, split: str, variant: str | None, check_images: bool) -> list[PairDataset]:
    names = [f"img_{i}" for i in range(6)]
    pairs = [("img_0", "img_0", "same"), ("img_1", "img_2", "different"), ("img_3", "img_3", "same"),
             ("img_4", "img_5", "different")]  # fmt: skip
    return [PairDataset("pairs", "pairs", split, root, pairs, names, {n: root / f"{n}.png" for n in names})]


class SameOrNot:
    """A toy captioner: "same" when the two images' vectors agree, else ``other``."""

    needs = ("reference",)

    def __init__(self, other: str) -> None:
        self.other = other

    def caption(self, first: np.ndarray, second: np.ndarray) -> str:
        return "same" if float(first @ second) > 0.999 else self.other


class PairCaptionProtocol(BenchmarkProtocol):
    """Captions each pair from the cached gallery vectors; the metric is the share of exact caption matches."""

    def method_names(self):
        return ["same-or-not", "always-same"], []

    def load_method(self, name, encoder, checkpoint):
        return SameOrNot("different" if name == "same-or-not" else "same")

    def describe(self, spec, config):
        return {"scorer": "exact match"}, ["captions scored by exact match"]

    def score(self, prepared, method, run):
        outcome = MethodOutcome()
        for dataset in prepared.datasets:
            vectors, row = prepared.features.vectors[dataset.name], dataset.gallery_row
            started = time.perf_counter()
            captions = [method.caption(vectors[row[a]], vectors[row[b]]) for a, b, _ in dataset.queries]
            exact = np.mean([c == ref for c, (_, _, ref) in zip(captions, dataset.queries)]) * 100
            outcome.rows.append(run.row(dataset, {"exact": float(exact)}, started))
        return outcome


def test_a_benchmark_with_its_own_protocol_fits_the_runner(tiny_encoder, toy_root, tmp_path):
    BENCHMARKS.register("pairs", BenchmarkSpec(
        name="pairs", title="Pairs", description="image pairs, what changed", splits=("val",),
        default_split="val", default_method="same-or-not", monitor="exact", query_fields=("reference",),
        loader=load_pairs, protocol=PairCaptionProtocol,
    ))  # fmt: skip
    try:
        datasets = load_benchmark("pairs", toy_root)
        methods, skipped = resolve_methods(["all"], benchmark="pairs")
        assert list(methods) == ["same-or-not", "always-same"] and skipped == {}
        report = evaluate(datasets, tiny_encoder, methods, tmp_path / "cache", QUIET)
        assert [(r.method, r.metrics["exact"]) for r in report.rows] == [("same-or-not", 100.0), ("always-same", 50.0)]
        assert report.to_dict()["scorer"] == "exact match" and "captions scored by exact match" in report.notes()
        assert report.table() == (["method", "exact"], [["same-or-not", "100.00"], ["always-same", "50.00"]])
        validator = BenchmarkValidator(datasets, tiny_encoder, tmp_path / "cache", QUIET)
        assert validator(SameOrNot("different")) == {"exact": 100.0} and validator.monitor == "exact"
    finally:
        BENCHMARKS.unregister("pairs")
    assert "pairs" not in BENCHMARKS
