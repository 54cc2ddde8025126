"""One way out for every command: text and tables for people, or ``--json`` for programs; one-line errors.

Commands call :func:`emit` with the JSON payload and a function that yields what a person sees (plain strings,
never read as rich markup, and :func:`table` tables, whose cells are escaped), so user-supplied text such as a
path with ``[brackets]`` prints as it is. Status lines ("model: …") go to stderr through :func:`status`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clipmath.errors import ClipmathError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Shown = Union[str, Table]

#: How this CLI names the fields that core errors quote ("the 'target' text is missing" -> "the --to text ...").
FIELD_FLAGS = {
    "reference": "--image",
    "text": "--text",
    "source": "--from",
    "target": "--to",
    "lam": "--lam",
    "lams": "--lam",
    "terms": "--expr",
    "expression": "--expr",
    "checkpoint": "--checkpoint",
    "k": "--k",
    "verified_only": "--verified-only",
    "before_weight": "--before-weight",
    "after_weight": "--after-weight",
    "limit": "--limit",
    "submission": "--submission",
    "half_kernel": "--half-kernel",
    "port": "--port",
    "token": "--token",
    "video_every": "--video-every",
    "scene_threshold": "--scene-threshold",
    "max_frames": "--max-frames",
}
#: field names that are also values (a method is called 'text'): reworded only when the error says it is the field.
_AMBIGUOUS = {"text", "k"}


def emit(payload: Any, as_json: bool, render: Callable[[], Iterable[Shown]]) -> None:
    """Print ``payload`` as JSON with ``--json``; otherwise print what ``render()`` yields."""
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    for item in render():
        if isinstance(item, Table):
            print_table(item)
        else:
            out.print(item, markup=False, highlight=False)


def status(message: str, as_json: bool = False) -> None:
    """A progress or provenance line on stderr ("model: …"); silent with ``--json``."""
    if not as_json:
        err.print(message, markup=False, highlight=False)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    caption: str | None = None,
    left: Sequence[str] = ("id", "method", "name", "path"),
    wrap: Sequence[str] = ("description",),
) -> Table:
    """A rich table whose title, caption and cells are shown literally (never parsed as markup); only the ``wrap``
    columns may wrap, the others always print whole."""
    shown = Table(
        title=escape(title) if title else None,
        caption=escape(caption) if caption else None,
        title_justify="left",
    )
    for column in columns:
        justify = "left" if column in left else "right"
        shown.add_column(escape(column), justify=justify, no_wrap=column not in wrap, overflow="fold")
    for row in rows:
        shown.add_row(*[escape(str(cell)) for cell in row])
    return shown


def print_table(shown: Table) -> None:
    """Print a table without cutting a cell short: on a terminal only the wrappable columns wrap (the console
    widens if the others need it); into a pipe or a file every row stays on one line."""
    narrow = out.width
    needed = out.measure(shown, options=out.options.update_width(100_000))
    out.width = max(narrow, needed.minimum if out.is_terminal else needed.maximum)
    try:
        out.print(shown)
    finally:
        out.width = narrow


def key_values(rows: Iterable[tuple[str, object]]) -> list[str]:
    """``key: value`` lines with the keys right-aligned."""
    rows = list(rows)
    width = max((len(key) for key, _ in rows), default=0)
    return [f"{key:>{width}}: {value}" for key, value in rows]


def error_line(exc: ClipmathError) -> str:
    """The one line printed for a user error, with the core's quoted field names worded as this CLI's flags."""
    message = " ".join(str(exc).split())
    field = getattr(exc, "field", None)
    for name, flag in FIELD_FLAGS.items():
        if name not in _AMBIGUOUS or name == field:
            message = message.replace(f"'{name}'", flag)
    return f"error: {message}"
