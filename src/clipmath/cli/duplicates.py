"""``clipmath duplicates STORE``: groups of near-duplicate photos, best copy first (nothing is deleted)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli.options import IndexKindOpt, JsonOpt, StoreArg
from clipmath.cli.output import emit, status, table

app = typer.Typer()

_EXAMPLES = """Examples:

  clipmath duplicates photos.store

  clipmath duplicates photos.store --threshold 0.9 --csv duplicates.csv

  clipmath duplicates big.store --index hnsw --json       # an approximate self-join for millions of photos
"""


@app.command(epilog=_EXAMPLES)
def duplicates(
    store: StoreArg,
    threshold: Annotated[
        float, typer.Option(min=-1.0, max=1.0, help="Cosine similarity at which two photos count as copies.")
    ] = 0.95,
    neighbours: Annotated[int, typer.Option(min=1, help="Nearest photos each photo is compared with.")] = 10,
    index_kind: IndexKindOpt = "exact",
    csv_out: Annotated[
        Optional[Path], typer.Option("--csv", help="Also write every copy as a CSV row ('-': standard output).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List groups of near-duplicate photos in a store, the copy to keep first (most pixels, then largest file).
    Nothing is deleted or moved."""
    from clipmath.store.duplicates import find_duplicates

    report = find_duplicates(store, threshold, neighbours, index_kind)
    status(f"model: {report.model}", as_json)
    if csv_out is not None:
        if str(csv_out) == "-":
            report.write_csv(sys.stdout)
            return
        with open(csv_out, "w", newline="", encoding="utf-8") as out:
            report.write_csv(out)
    payload = asdict(report) | {"redundant": report.redundant}

    def render():
        yield (
            f"{len(report.groups)} groups of near-duplicates among {report.items} photos (cosine ≥ {threshold}); "
            f"{report.redundant} copies beyond the one to keep"
        )
        rows = [
            (number, "keep" if rank == 0 else "", f"{score:.3f}", copy.id, f"{copy.width or '?'}x{copy.height or '?'}")
            for number, (group, score) in enumerate(zip(report.groups, report.scores), start=1)
            for rank, copy in enumerate(group)
        ]
        if rows:
            yield table(("group", "keep", "score", "id", "size"), rows)
        if csv_out is not None:
            yield f"csv: {csv_out}"

    emit(payload, as_json, render)
