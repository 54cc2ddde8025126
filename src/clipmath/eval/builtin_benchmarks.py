"""The built-in benchmarks, registered in :data:`clipmath.eval.benchmarks.BENCHMARKS` on its first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipmath.eval.benchmarks import BENCHMARKS, BenchmarkSpec, SubmissionFormat


def _load_fashioniq(root: Path, split: str, variant: str | None, check_images: bool) -> list[Any]:
    from clipmath.data.fashioniq import CATEGORIES, load_fashioniq

    return [load_fashioniq(root, c, split, check_images) for c in ([variant] if variant else CATEGORIES)]


def _load_cirr(root: Path, split: str, variant: str | None, check_images: bool) -> list[Any]:
    from clipmath.data.cirr import load_cirr

    return [load_cirr(root, split, check_images)]


def _load_circo(root: Path, split: str, variant: str | None, check_images: bool) -> list[Any]:
    from clipmath.data.circo import load_circo

    return [load_circo(root, split, check_images)]


def _load_simat(root: Path, split: str, variant: str | None, check_images: bool) -> list[Any]:
    from clipmath.data.simat import load_simat

    return [load_simat(root, split, check_images)]


def _register_builtins() -> None:
    from clipmath.data import circo, cirr, fashioniq, simat

    here = "clipmath.eval.builtin_benchmarks"
    cir = ("reference", "text")
    BENCHMARKS.register("fashioniq", BenchmarkSpec(
        name="fashioniq", title="FashionIQ", description="fashion images and two relative captions per query "
        "(dress, shirt, toptee; Recall@10/50 per category and averaged)",
        splits=fashioniq.SPLITS, default_split="val", default_method="sum", monitor="average/R@10",
        query_fields=cir, loader=f"{here}:_load_fashioniq", protocol="clipmath.eval.scoring:RetrievalProtocol",
        variants=fashioniq.CATEGORIES, recall_ks=(10, 50), two_captions=True,
    ))  # fmt: skip
    BENCHMARKS.register("cirr", BenchmarkSpec(
        name="cirr", title="CIRR", description="real-life images and a relative caption per query "
        "(Recall@K, Recall_subset@K, Avg)",
        splits=cirr.SPLITS, split_aliases=dict(cirr.SPLIT_ALIASES), default_split="val", default_method="sum",
        monitor="Avg", query_fields=cir, loader=f"{here}:_load_cirr",
        protocol="clipmath.eval.scoring:RetrievalProtocol", metric_sets=("recall", "recall-subset"),
        recall_ks=(1, 5, 10, 50),
        submission=SubmissionFormat("https://cirr.cecs.anu.edu.au/", "clipmath.eval.submissions:cirr_writer",
                                    "clipmath.eval.submissions:validate_cirr_file"),
    ))  # fmt: skip
    BENCHMARKS.register("circo", BenchmarkSpec(
        name="circo", title="CIRCO", description="COCO 2017 unlabeled images, several ground truths per query "
        "(mAP@K)",
        splits=circo.SPLITS, default_split="val", default_method="sum", monitor="mAP@10", query_fields=cir,
        loader=f"{here}:_load_circo", protocol="clipmath.eval.scoring:RetrievalProtocol",
        metric_sets=("map", "main-target-recall", "aspect-map"), recall_ks=(5, 10, 25, 50),
        submission=SubmissionFormat("https://circo.micc.unifi.it/", "clipmath.eval.submissions:circo_writer",
                                    "clipmath.eval.submissions:validate_circo_file"),
    ))  # fmt: skip
    BENCHMARKS.register("simat", BenchmarkSpec(
        name="simat", title="SIMAT", description="Visual Genome regions changed by a word swap (SIMAT score)",
        splits=simat.DOMAINS, default_split="test", validation_split="dev", default_method="delta",
        monitor="score", query_fields=("reference", "source", "target"), loader=f"{here}:_load_simat",
        protocol="clipmath.eval.scoring:SimatProtocol", takes_lam=True,
        oracles={"labels": "clipmath.eval.simat:label_oracle", "oscar": "clipmath.eval.simat:oscar_oracle"},
    ))  # fmt: skip


_register_builtins()


def _register_difference_benchmarks() -> None:
    from clipmath.eval.difference import register_benchmarks

    register_benchmarks(BENCHMARKS)  # clevr-change, spot-the-diff (their protocol is in clipmath.eval.difference)


_register_difference_benchmarks()
