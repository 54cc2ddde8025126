"""``clipmath duplicates STORE``: near-duplicate groups, the best copy first (nothing is deleted)."""

from __future__ import annotations

import csv
import io
from typing import Annotated

import typer

from clipmath.cli.options import JsonOpt, StoreArg
from clipmath.cli.output import emit
from clipmath.cli.settings import with_settings
from clipmath.store.duplicates import DuplicateSearch

app = typer.Typer(add_completion=False)  # one command: typer would give it completion options


@app.command(epilog="Examples:\n\n  clipmath duplicates photos.store --threshold 0.97\n\n"
             "  clipmath duplicates photos.store --csv > groups.csv")  # fmt: skip
@with_settings(DuplicateSearch, "search")
def duplicates(
    store: StoreArg,
    search: DuplicateSearch,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV rows: group, rank, id, best, min_score.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Group near-duplicate images of a store (a self-join of its vectors); deletes nothing."""
    from clipmath.store import Gallery
    from clipmath.store.duplicates import duplicate_groups, duplicate_pairs
    from clipmath.store.photometa import all_photo_meta

    with Gallery.open(store) as gallery:
        snapshot, metas = gallery.snapshot(), all_photo_meta(gallery)
    pairs = duplicate_pairs(snapshot.vectors, search, progress=not (as_json or as_csv))
    groups = duplicate_groups(snapshot.ids, pairs, metas)
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group", "rank", "id", "best", "min_score"])
        for number, group in enumerate(groups, 1):
            writer.writerows([number, rank, i, i == group.best, group.min_score] for rank, i in enumerate(group.ids, 1))
        typer.echo(out.getvalue(), nl=False)
        return
    payload = {"threshold": search.threshold, "pairs": len(pairs),
               "groups": [{"best": g.best, "ids": g.ids, "min_score": g.min_score} for g in groups]}  # fmt: skip

    def render():
        noun = "group" if len(groups) == 1 else "groups"
        yield f"{len(groups)} {noun} of near-duplicates (cosine >= {search.threshold}); nothing was deleted"
        for group in groups:
            yield f"  keep {group.best}  (also: {', '.join(group.ids[1:])}; weakest link {group.min_score:.3f})"

    emit(payload, as_json, render)
