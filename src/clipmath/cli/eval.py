"""``clipmath eval``: compose methods on a registered benchmark, with its official metrics; ``clipmath benchmarks``
lists the registry (:data:`clipmath.eval.BENCHMARKS`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli.options import (
    MULTI_VALUE,
    CheckpointsOpt,
    DeviceOpt,
    DtypeOpt,
    EncodeBatchOpt,
    JsonOpt,
    ModelOpt,
    PreprocessingOpt,
    QuietOpt,
    ThreadsOpt,
    method_paths,
    option_values,
)
from clipmath.cli.output import emit, key_values, table
from clipmath.cli.runtime import load_model
from clipmath.errors import ClipmathError
from clipmath.eval.benchmarks import BENCHMARKS, find_benchmark

app = typer.Typer()

_EXAMPLES = """Examples:

  clipmath eval --dataset cirr --path data/CIRR --methods all

  clipmath eval -d fashioniq -p data/FashionIQ --method combiner --checkpoint combiner=runs/combiner

  clipmath eval -d simat -p data/SIMAT --lam 1 2 --oracle oscar --json

  clipmath eval -d circo -p data/CIRCO --split test --submission circo_test.json
"""


def _oracle_help() -> str:
    judged = "; ".join(f"{s.name}: {' or '.join(s.oracles)}" for s in BENCHMARKS.list() if s.oracles)
    return f"The judge, where a benchmark has several (first is the default): {judged or 'none registered'}."


@app.command("eval", context_settings=MULTI_VALUE, epilog=_EXAMPLES)
def eval_command(
    ctx: typer.Context,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", "-d", help=f"Benchmark: {', '.join(BENCHMARKS.names())} (`clipmath benchmarks` lists them)."
        ),
    ],
    path: Annotated[Path, typer.Option("--path", "-p", help="The benchmark folder, in its official layout.")],
    split: Annotated[
        Optional[str],
        typer.Option(
            help="Split (default: "
            + ", ".join(f"{s.default_split} on {s.name}" for s in BENCHMARKS.list())
            + "; `clipmath benchmarks` lists each one's splits)."
        ),
    ] = None,
    method: Annotated[
        Optional[list[str]],
        typer.Option(
            "--method",
            help="Compose method (repeatable; a variant sets its knobs: 'pdv[image_weight=0.3]'); "
            "default: the benchmark's own.",
        ),
    ] = None,
    methods: Annotated[
        Optional[str],
        typer.Option(help="'all' (every method on the same cached gallery, side by side) or a comma list."),
    ] = None,
    checkpoint: CheckpointsOpt = None,
    category: Annotated[
        Optional[str], typer.Option(help="FashionIQ: only this category (dress, shirt or toptee).")
    ] = None,
    lam: Annotated[
        Optional[list[float]], typer.Option("--lam", help="SIMAT: λ values, e.g. --lam 1 2 (default 1).")
    ] = None,
    oracle: Annotated[Optional[str], typer.Option(help=_oracle_help())] = None,
    caption_orders: Annotated[
        str,
        typer.Option(help="FashionIQ: both (average both caption orders, as SEARLE) or one (as CLIP4Cir)."),
    ] = "both",
    limit: Annotated[
        Optional[int], typer.Option(min=1, help="Only the first N queries (a quick check; not comparable numbers).")
    ] = None,
    submission: Annotated[
        Optional[Path],
        typer.Option(help="CIRR/CIRCO: write the validated server file(s) here (CIRR adds _cirr_recall[_subset])."),
    ] = None,
    cache: Annotated[
        Optional[Path],
        typer.Option(help="Feature-cache root (default: <clipmath cache>/eval); one store per model and split."),
    ] = None,
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    preprocessing: PreprocessingOpt = None,
    batch_size: EncodeBatchOpt = 64,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate compose methods on a benchmark (see `clipmath benchmarks`): a table of the official metrics.

    Gallery features are cached per model, split and preprocessing, so later runs encode nothing.
    """
    from clipmath.eval.job import EvalJob, plan_eval, run_eval

    lams = option_values(ctx, lam, "--lam", float, "numbers") or []  # EvalConfig checks each value
    if method and methods:
        raise ClipmathError("give --method or --methods, not both")
    selection = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(method or [])
    spec, _ = find_benchmark(dataset)
    checkpoints = method_paths(checkpoint, spec.get_protocol().method_names()[1], selection or [spec.default_method])
    job = EvalJob(dataset, path, split, tuple(selection), checkpoints, category, tuple(lams), oracle, caption_orders,
                  limit, submission, cache)  # fmt: skip
    plan = plan_eval(job, batch_size=batch_size, progress=not (quiet or as_json))
    encoder = load_model(model, device, preprocessing, dtype, threads, as_json)
    report, written = run_eval(plan, encoder)
    payload = report.to_dict()
    payload["submissions"] = [str(p) for p in written]

    def render():
        header, rows = report.table()
        title = f"{plan.spec.name} {plan.split} · {report.num_queries} queries · preprocessing {report.preprocessing}"
        yield table(header, rows, title=title, caption=f"model: {report.model}", left=("method",))
        yield from (f"note: {note}" for note in report.notes())
        yield from (f"submission: {file}" for file in written)
        yield (
            f"gallery: {report.gallery_images} images, {report.encoded_images} encoded this run "
            f"(cache: {report.store}); {report.seconds:.1f}s"
        )

    emit(payload, as_json, render)


@app.command(epilog="Examples:\n\n  clipmath benchmarks\n\n  clipmath benchmarks --json")
def benchmarks(as_json: JsonOpt = False) -> None:
    """List the benchmarks `clipmath eval --dataset` takes: splits, default method, monitor metric, test server."""
    listing = [spec.summary() for spec in BENCHMARKS.list()]

    def render():
        columns = ("name", "title", "splits", "default method", "monitor", "submission server")
        rows = [
            (
                entry["name"],
                entry["title"],
                ", ".join(f"{s}*" if s == entry["default_split"] else s for s in entry["splits"]),
                entry["default_method"],
                entry["monitor"],
                entry["submission_server"] or "-",
            )
            for entry in listing
        ]
        yield table(columns, rows, title="benchmarks (--dataset)", left=columns, wrap=("submission server",))
        yield from key_values((entry["name"], entry["description"]) for entry in listing)
        yield "* the default split. Each loads from its official folder layout: see docs/benchmarks.md."

    emit(listing, as_json, render)
