"""``clipmath check STORE [--repair]``: find damage in a store, and repair it to the rows that still verify."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from clipmath.cli.options import JsonOpt, StoreArg
from clipmath.cli.output import emit

app = typer.Typer()

_EXAMPLES = """Examples:

  clipmath check photos.store

  clipmath check photos.store --repair
"""


@app.command(epilog=_EXAMPLES)
def check(
    store: StoreArg,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Keep every item whose vector verifies, drop the damaged ones (and list them)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify a store (manifest, item rows, vector file length, a checksum per committed chunk)."""
    from clipmath import store as stores

    found = stores.check(store)
    if repair and not found.ok:
        fixed = stores.repair(store)

        def render_repair():
            yield f"{store}: damaged, repaired"
            yield from (f"  found: {problem}" for problem in fixed.problems)
            yield (
                f"kept {fixed.kept_items} items; dropped {len(fixed.dropped_items)} items, "
                f"{fixed.dropped_rows} damaged vector rows"
            )
            yield from (f"  dropped: {item}" for item in fixed.dropped_items[:50])
            if len(fixed.dropped_items) > 50:
                yield f"  ... and {len(fixed.dropped_items) - 50} more (all of them in --json)"
            if fixed.unreadable_items:
                yield f"at least {fixed.unreadable_items} item rows could not be read (their ids are unknown)"
            if fixed.vector_file:
                yield f"the kept vectors are in {store / fixed.vector_file}"
            if fixed.damaged_copy:
                yield f"the damaged manifest is kept as {store / fixed.damaged_copy}"
            yield "run 'clipmath index' on the folder again to re-add the dropped images"

        emit({**asdict(fixed), "store": str(store)}, as_json, render_repair)
        return

    def render():
        verdict = "ok" if found.ok else "DAMAGED"
        counts = f"{found.items} items, {found.vector_rows} vector rows, {found.verified_rows} verified"
        yield f"{store}: {verdict} ({counts})"
        yield from (f"  problem: {problem}" for problem in found.problems)
        yield from (f"  note: {note}" for note in found.notes)
        if not found.ok:
            yield f"run: clipmath check {store} --repair"

    emit({**asdict(found), "ok": found.ok, "store": str(store)}, as_json, render)
    if not found.ok:
        raise typer.Exit(1)
