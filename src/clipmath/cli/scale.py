"""Scale-out commands: ``clipmath merge`` (shard stores into one), ``clipmath index-kinds``, and the Ray engine
behind ``clipmath index --engine ray`` (its options are declared here and used by ``cli/gallery.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import JsonOpt
from clipmath.cli.output import emit, key_values, status, table
from clipmath.errors import ClipmathError

app = typer.Typer(add_completion=False)

EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="local (this process) or ray (a Ray cluster: pip install 'clipmath[distributed]')."),
]
AddressOpt = Annotated[
    Optional[str],
    typer.Option("--address", help="Ray cluster address (e.g. auto or HOST:6379); default: start one here."),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", min=1, help="Ray engine: model actors (each loads the model once).")
]
GpusOpt = Annotated[float, typer.Option("--gpus-per-worker", min=0, help="Ray engine: GPUs per actor (0: CPU actors).")]
FilesOpt = Annotated[
    Optional[Path], typer.Option("--files", help="Index only the files listed (.txt, .csv or .parquet; column 'path').")
]
StoreDtypeOpt = Annotated[
    Optional[str], typer.Option("--store-dtype", help="Vector precision of a new store: float32 (default) or float16.")
]
RecallOpt = Annotated[
    Optional[float],
    typer.Option("--recall", min=0.0, max=1.0, help="Approximate index: tune to this recall@10 on a held-out sample."),
]

HalfKernelOpt = Annotated[
    str,
    typer.Option(
        "--half-kernel",
        help="Exact search of a float16 store on the CPU: auto (a fused kernel at memory speed where it builds, "
        "else torch's half GEMV), torch, compiled (native, else inductor), native (C, x86-64, built once per "
        "machine) or inductor (torch.compile, ~2 s per process).",
    ),
]


@app.command(epilog="Example:\n\n  clipmath merge part1.store part2.store --into all.store")
def merge(
    shards: Annotated[list[Path], typer.Argument(help="Shard stores (same model and preprocessing).")],
    into: Annotated[Path, typer.Option("--into", help="The merged store (created, or completed if it exists).")],
    store_dtype: StoreDtypeOpt = None,
    verified_only: Annotated[
        bool,
        typer.Option("--verified-only", help="Merge a damaged shard's items whose vectors verify; list the others."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Merge shard stores into one: ids re-rooted under the shards' common folder, duplicate content stored once.

    Every shard's checksums are verified first: a damaged shard is refused unless --verified-only."""
    from clipmath.store.merge import merge_stores

    report = merge_stores(shards, into, dtype=store_dtype, progress=not as_json, verified_only=verified_only)
    rows = [
        ("merged store", report.into),
        ("image root", report.root),
        ("shards", report.shards),
        ("items added", report.added),
        ("vectors written", report.vectors_written),
        ("items sharing a vector", report.shared_vectors),
        ("already present", report.already_present),
        ("replaced by a newer file", report.replaced),
        ("older duplicates skipped", report.older_skipped),
        ("images in the store", report.total),
        ("left out (vector did not verify)", len(report.unverified)),
        ("left out (vector not finite)", len(report.non_finite)),
        ("seconds", f"{report.seconds:.1f}"),
    ]

    def render() -> Any:
        yield from key_values(rows)
        yield from (f"  not verified, left out: {item}" for item in report.unverified[:50])
        if len(report.unverified) > 50:
            yield f"  ... and {len(report.unverified) - 50} more (all of them in --json)"

    emit(asdict(report), as_json, render)


@app.command("index-kinds", epilog="Example:\n\n  clipmath index-kinds --json")
def index_kinds(as_json: JsonOpt = False) -> None:
    """List the vector index kinds for --index (a FAISS factory string works too)."""
    from clipmath.search import INDEX_KINDS

    specs = INDEX_KINDS.list()
    payload = [{"name": s.name, "approximate": s.approximate, "summary": s.summary} for s in specs]
    rows = [(s.name, "approximate" if s.approximate else "exact", s.summary) for s in specs]
    emit(payload, as_json, lambda: [table(("kind", "search", "what"), rows, title="index kinds")])


@dataclass(frozen=True)
class RayCommand:
    """The model and cluster options of ``clipmath index --engine ray``."""

    model: Optional[str]
    device: str
    dtype: str
    preprocessing: Optional[str]
    address: Optional[str]
    workers: int
    gpus_per_worker: float


def read_listed(files: Optional[Path], folder: Path) -> Optional[list[str]]:
    """``--files LIST``: the ids it names (None: the whole folder)."""
    if files is None:
        return None
    from clipmath.store.ray_engine import read_file_list

    return read_file_list(files, folder)


def run_ray_index(
    folder: Path, store: Path, config: Any, files: Optional[Path], ray: RayCommand, as_json: bool
) -> tuple[Any, Any]:
    """``clipmath index --engine ray``: the encoder is built on the driver (its identity) and once per actor.
    Returns the report and the driver's encoder."""
    from clipmath.encoders import load_encoder
    from clipmath.store.ray_engine import RayOptions, index_with_ray, model_factory, require_ray

    require_ray()
    factory, device = model_factory(ray.model, ray.device, ray.preprocessing, ray.dtype, ray.gpus_per_worker)
    driver_encoder = load_encoder(ray.model, device="cpu", preprocessing=ray.preprocessing)
    status(f"model: {driver_encoder.info.label()} (on {ray.workers} Ray actors, device {device})", as_json)
    options = RayOptions(address=ray.address, workers=ray.workers, gpus_per_worker=ray.gpus_per_worker)
    listed = read_listed(files, folder)
    report = index_with_ray(store, folder, factory, config, listed, options, driver_encoder, progress=not as_json)
    return report, driver_encoder


def index_params(device: str, recall: Optional[float], half_kernel: str = "auto") -> Any:
    """Search index parameters from ``--device`` (exact search on the GPU with cuda), ``--recall`` and
    ``--half-kernel``."""
    from clipmath.search import IndexParams

    return IndexParams(device=device, recall=recall, half_kernel=half_kernel)


def report_tuning(index: Any, as_json: bool) -> None:
    """Say what ``--recall`` tuning reached (on stderr)."""
    tuning = getattr(index, "tuning", None)
    if tuning is not None:
        status(f"index tuned: {tuning.describe()}", as_json)


def check_engine(engine: str) -> str:
    if engine not in ("local", "ray"):
        raise ClipmathError(f"unknown indexing engine '{engine}' (use local or ray)")
    return engine
