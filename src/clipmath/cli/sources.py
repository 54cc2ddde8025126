"""LAION-scale data in and out: ``clipmath export`` (clip-retrieval's embeddings layout) and
``clipmath import-embeddings`` (such a folder opened as a store); the tar-shard branch of ``clipmath index``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import JsonOpt, PreprocessingOpt, StoreArg, StoreOpt
from clipmath.cli.output import emit, key_values, status
from clipmath.errors import ClipmathError

app = typer.Typer(add_completion=False)


def source_kind(sources: list[Path]) -> str:
    """What ``clipmath index SOURCE...`` names: ``folder``, ``shards`` (webdataset tars) or ``table``."""
    from clipmath.store.shards import is_shard_spec
    from clipmath.store.tables import is_table_spec

    if len(sources) > 1 or is_shard_spec(str(sources[0])):
        return "shards"
    return "table" if is_table_spec(str(sources[0])) else "folder"


def index_source(kind: str, sources: list[Path], store: Path, encoder: Any, config: Any, as_json: bool):
    """``clipmath index`` of tar shards or a table: the report and the store's image root."""
    if kind == "table":
        from clipmath.store.tables import index_table

        return index_table(store, sources[0], encoder, config, progress=not as_json), sources[0].parent
    from clipmath.store.shard_indexer import index_shards
    from clipmath.store.shards import expand_shards, shards_root

    shards = expand_shards([str(s) for s in sources])
    status(f"{len(shards)} tar shards", as_json)
    return index_shards(store, shards, encoder, config, progress=not as_json), shards_root(shards)


def index_source_on_ray(sources: list[Path], store: Path, config: Any, ray: Any, as_json: bool):
    """``clipmath index SHARDS... --engine ray``: one Ray task per shard; the report, the shards' root, the
    driver's encoder (built here for its identity, and once per actor)."""
    import functools

    from clipmath.encoders import load_encoder
    from clipmath.store.ray_engine import RayOptions, require_ray
    from clipmath.store.ray_shards import index_shards_with_ray
    from clipmath.store.shards import expand_shards, shards_root

    require_ray()
    shards = expand_shards([str(s) for s in sources])
    device = "cuda" if ray.gpus_per_worker and ray.device == "cpu" else ray.device
    factory = functools.partial(
        load_encoder, ray.model, device=device, preprocessing=ray.preprocessing, dtype=ray.dtype
    )
    encoder = load_encoder(ray.model, device="cpu", preprocessing=ray.preprocessing)
    status(f"model: {encoder.info.label()} (on {ray.workers} Ray actors, device {device})", as_json)
    status(f"{len(shards)} tar shards", as_json)
    options = RayOptions(address=ray.address, workers=ray.workers, gpus_per_worker=ray.gpus_per_worker)
    report = index_shards_with_ray(store, shards, factory, config, options, encoder, progress=not as_json)
    return report, shards_root(shards), encoder


_EXPORT_EXAMPLES = """Examples:

  clipmath export photos.store photos-emb --format clip-retrieval

  clipmath export photos.store photos-emb --shard-size 100000 --index ivf
"""


@app.command(epilog=_EXPORT_EXAMPLES)
def export(
    store: StoreArg,
    out: Annotated[Path, typer.Argument(help="Output folder (img_emb/, metadata/, knn.index).")],
    format: Annotated[str, typer.Option("--format", help="Output layout: clip-retrieval.")] = "clip-retrieval",
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Rows per npy/parquet file.")] = 1_000_000,
    index: Annotated[
        Optional[str],
        typer.Option("--index", help="Also write knn.index + index_infos.json: flat, ivf, hnsw, ivfpq or a factory."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a store's embeddings and metadata as clip-retrieval does (float16, L2-normalised, row-aligned)."""
    from clipmath.store.export import ExportConfig, export_store

    report = export_store(store, out, ExportConfig(format, shard_size, index), progress=not as_json)
    rows = [
        ("output", report.out),
        ("model", report.model),
        ("rows", report.rows),
        ("dimension", report.dim),
        ("shards", len(report.shards)),
        ("captions", report.captions),
        ("text_emb", "written" if report.text_emb else "-"),
        ("index", report.index or "-"),
        ("seconds", f"{report.seconds:.1f}"),
    ]
    emit(asdict(report), as_json, lambda: key_values(rows))


_IMPORT_EXAMPLES = """Examples:

  clipmath import-embeddings laion-emb/ --store laion.store --model openai/clip-vit-large-patch14

  clipmath import-embeddings photos-emb/ --store copy.store --model tiny-random-clip --no-checksum
"""


@app.command("import-embeddings", epilog=_IMPORT_EXAMPLES)
def import_embeddings(
    folder: Annotated[Path, typer.Argument(help="A clip-retrieval / LAION embeddings folder (img_emb/, metadata/).")],
    store: StoreOpt,
    model: Annotated[
        Optional[str], typer.Option("--model", help="The model that made the embeddings (its dimension must match).")
    ] = None,
    preprocessing: PreprocessingOpt = None,
    checksum: Annotated[bool, typer.Option(help="Hash every shard's vectors at import (reads them once).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Open an embeddings folder as a store without copying its vectors (the npy files are memory-mapped)."""
    from clipmath.encoders import load_encoder
    from clipmath.store.external import ImportConfig
    from clipmath.store.external import import_embeddings as run_import

    if not model:
        raise ClipmathError("name the model that made the embeddings: --model NAME")
    if not folder.is_dir():
        raise ClipmathError(f"embeddings folder not found: {folder}")
    encoder = load_encoder(model, preprocessing=preprocessing)
    status(f"model: {encoder.info.label()}", as_json)
    report = run_import(folder, store, encoder.info, encoder.transform.key, ImportConfig(checksum), not as_json)
    rows = [
        ("store", report.store),
        ("embeddings", report.folder),
        ("model", report.model),
        ("rows", report.rows),
        ("dimension", report.dim),
        ("dtype", report.dtype),
        ("shards", report.shards),
        ("ids from", report.id_column or "shard/row"),
        ("captions", report.captions),
        ("text_emb", f"{report.store / 'text'} (search --target text)" if report.text_emb else "-"),
        ("seconds", f"{report.seconds:.1f}"),
    ]
    emit(asdict(report), as_json, lambda: key_values(rows))
