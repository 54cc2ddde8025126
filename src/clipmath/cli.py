"""The ``clipmath`` command line. Every command that reads a gallery takes ``--store PATH``.

User mistakes (missing files, bad expressions, incompatible stores, unknown models) print one ``error:`` line and
exit with status 2; nothing prints a traceback unless ``CLIPMATH_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clipmath.errors import ClipmathError

app = typer.Typer(
    name="clipmath",
    help="Arithmetic in a shared image-text embedding space: index, compose, search, evaluate, caption, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Gallery store folder.")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model: auto, offline-imagenet-minilm, tiny-random-clip, a hub name "
        "(openai/clip-vit-base-patch32) or a local folder. Default for search: the store's model.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _emit_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


# ---- index ------------------------------------------------------------------------------------------------
@app.command()
def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    store: StoreOpt,
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: Annotated[str, typer.Option(help="clip (resize + centre crop) or targetpad.")] = "clip",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per encoder batch.")] = 32,
    commit_every: Annotated[int, typer.Option(min=1, help="Images per atomic commit.")] = 256,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse images with more pixels (decompression bombs).")
    ] = 89_478_485,
    prune: Annotated[bool, typer.Option(help="Forget files that are gone from the folder, and compact.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index (or update) a folder of images into a store: incremental, resumable, crash-safe."""
    from clipmath.encoders import load_encoder
    from clipmath.store import Gallery, IndexConfig, index_folder

    if not folder.is_dir():
        raise ClipmathError(f"image folder not found: {folder}")
    if (store / "manifest.sqlite").exists() and model in (None, "auto"):
        model = Gallery.open(store).model_id  # keep using the store's model
    encoder = load_encoder(model, device=device, preprocessing=preprocessing)
    if not as_json:
        err.print(f"model: {encoder.info.label()}", markup=False)
    config = IndexConfig(batch_size=batch_size, commit_every=commit_every, max_pixels=max_pixels, prune=prune)
    report = index_folder(store, folder, encoder, config, progress=not as_json)
    if prune and report.pruned:
        with Gallery.open_for_writing(store, encoder.info, encoder.transform.key, folder) as gallery:
            gallery.compact()
    if as_json:
        _emit_json(asdict(report))
        return
    out.print(
        f"indexed {folder} -> {store} in {report.seconds:.1f}s: {report.added} added, {report.reused} reused, "
        f"{report.unchanged} unchanged, {report.pruned} pruned; {report.total} images in the store"
    )
    if report.missing:
        out.print(f"{report.missing} stored files are gone from the folder (run with --prune to forget them)")
    if report.bad:
        out.print(f"{len(report.bad)} files skipped:")
        for item_id, reason in report.bad:
            out.print(f"  {item_id}: {reason}", markup=False)


# ---- search -----------------------------------------------------------------------------------------------
def _infer_method(image: Optional[str], text: Optional[str], source: Optional[str], expr: Optional[str]) -> str:
    if expr:
        return "expr"
    if source is not None:
        return "delta"
    if image and text:
        return "sum"
    if image:
        return "image"
    if text:
        return "text"
    raise ClipmathError("give a query: --image and/or --text, --image with --from/--to, or --expr")


@app.command()
def search(
    store: StoreOpt,
    image: Annotated[Optional[str], typer.Option("--image", "-i", help="Reference image file.")] = None,
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="Modification text.")] = None,
    source: Annotated[Optional[str], typer.Option("--from", help="SIMAT delta: source word/phrase.")] = None,
    target: Annotated[Optional[str], typer.Option("--to", help="SIMAT delta: target word/phrase.")] = None,
    lam: Annotated[float, typer.Option("--lam", help="SIMAT delta strength λ.")] = 1.0,
    expr: Annotated[Optional[str], typer.Option("--expr", "-e", help="Expression: '+a.jpg -b.jpg +\"text\"'.")] = None,
    method: Annotated[
        Optional[str], typer.Option(help="Compose method (see `clipmath methods`); inferred if omitted.")
    ] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Trained weights for learned methods.")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Number of results.")] = 10,
    index_kind: Annotated[
        str, typer.Option("--index", help="exact, flat, hnsw, ivfpq or a FAISS factory string.")
    ] = "exact",
    include_reference: Annotated[bool, typer.Option(help="Allow the reference image itself in the results.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Search a store with a composed query (image + text, image + from/to delta, or an expression)."""
    from clipmath.compose import CompositionQuery, parse_expression
    from clipmath.retrieval import Retriever, RetrieverConfig

    if (source is None) != (target is None):
        raise ClipmathError("--from and --to go together")
    method = method or _infer_method(image, text, source, expr)
    query = CompositionQuery(
        reference=image, text=text, source=source, target=target, lam=lam, terms=parse_expression(expr) if expr else []
    )
    config = RetrieverConfig(index=index_kind, exclude_reference=not include_reference)
    retriever = Retriever.open(store, model=model, device=device, config=config)
    hits = retriever.search([query], method=method, k=k, checkpoint=checkpoint)[0]
    label = retriever.encoder.info.label()
    if as_json:
        _emit_json(
            {
                "model": label,
                "method": method,
                "index": index_kind,
                "results": [
                    {"rank": h.rank + 1, "id": h.id, "path": str(retriever.path_of(h.id)), "score": h.score}
                    for h in hits
                ],
            }
        )
        return
    table = Table(title=escape(f"method {method} · model {label}"), title_justify="left")
    for column in ("rank", "score", "id"):
        table.add_column(column, justify="right" if column != "id" else "left")
    for h in hits:
        table.add_row(str(h.rank + 1), f"{h.score:.4f}", h.id)
    out.print(table)


# ---- info / methods ---------------------------------------------------------------------------------------
@app.command()
def info(store: Annotated[Path, typer.Argument(help="Store folder.")], as_json: JsonOpt = False) -> None:
    """Print a store's model, item count, dimension and size on disk."""
    from clipmath.store import Gallery

    with Gallery.open(store) as gallery:
        details = gallery.info()
    if as_json:
        _emit_json(asdict(details))
        return
    rows = [
        ("store", str(details.path)),
        ("model", details.model_id),
        ("backend", details.backend),
        ("dimension", str(details.dim)),
        ("preprocessing", details.preprocessing),
        ("images", str(details.count)),
        ("skipped files", str(details.bad_files)),
        ("image root", details.root),
        ("size on disk", f"{details.size_bytes / 1e6:.2f} MB"),
        ("created", details.created),
    ]
    for key, value in rows:
        out.print(f"{key:>14}: {value}", markup=False)


@app.command()
def methods(as_json: JsonOpt = False) -> None:
    """List the compose methods."""
    from clipmath.compose import available_methods

    listing = available_methods()
    if as_json:
        _emit_json(listing)
        return
    for name, description in listing.items():
        out.print(f"{name:>14}  {description}", markup=False)


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr and exit status 2."""
    try:
        app()
    except ClipmathError as exc:
        if os.environ.get("CLIPMATH_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: committed work is kept; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
