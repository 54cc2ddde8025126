"""The ``clipmath`` command line: wiring only. Each area's commands live in their own module of this package.

To add commands: write ``clipmath/cli/<area>.py`` with ``app = typer.Typer()`` and its commands (shared options from
:mod:`clipmath.cli.options`, output through :func:`clipmath.cli.output.emit`), then add one line below. A sub-app
named in ``LAZY_COMMANDS`` is imported only when it runs (or help is shown), so ``clipmath info`` never pays for
importing torch or FastAPI.

User mistakes (missing files, bad expressions, incompatible stores, unknown models) print one ``error:`` line and
exit with status 2; nothing prints a traceback unless ``CLIPMATH_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from clipmath.cli import check, gallery, scale, sources, sync
from clipmath.cli.output import err, error_line
from clipmath.errors import ClipmathError
from clipmath.registry import import_ref, load_plugins

#: commands (or groups) imported on first use: name -> "module:typer app" (the app's command of that name, else the
#: app itself). Their modules import heavy or optional packages: torch (train configs), FastAPI (serve), the
#: benchmark registry (eval), the caption decoders' options (caption, diff-caption).
LAZY_COMMANDS = {
    "eval": "clipmath.cli.eval:app",
    "benchmarks": "clipmath.cli.eval:app",
    "serve": "clipmath.cli.serve:app",
    "train": "clipmath.cli.train:app",
    "caption": "clipmath.cli.caption:app",
    "eval-captions": "clipmath.cli.caption:app",
    "duplicates": "clipmath.cli.duplicates:app",
    "diff-caption": "clipmath.cli.idc:app",
    "data": "clipmath.cli.idc:app",
}


class _Commands(TyperGroup):
    """The top-level command group, loading :data:`LAZY_COMMANDS` when they are asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in LAZY_COMMANDS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Optional[Any]:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            self.add_command(_load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


def _load(name: str) -> Any:
    """The click command of a lazy entry; one that says which extra to install if its imports are missing."""
    try:
        command = typer.main.get_command(import_ref(LAZY_COMMANDS[name]))
    except ImportError as exc:
        missing = exc.name

        def unavailable() -> None:
            raise ClipmathError(f"`clipmath {name}` needs {missing}: pip install 'clipmath[{name}]'")

        stub = typer.Typer(add_completion=False)
        stub.command(help=f"(not installed: needs {missing})")(unavailable)
        return typer.main.get_command(stub)
    inner = getattr(command, "commands", {})
    return inner.get(name, command)


app = typer.Typer(
    name="clipmath",
    cls=_Commands,
    help="Arithmetic in a shared image-text embedding space: index, compose, search, evaluate, caption, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(gallery.app)
app.add_typer(check.app)
app.add_typer(scale.app)
app.add_typer(sync.app)
app.add_typer(sources.app)


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr and exit status 2."""
    try:
        load_plugins()
        app()
    except ClipmathError as exc:
        if os.environ.get("CLIPMATH_DEBUG"):
            raise
        print(error_line(exc), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: committed work is kept; run the same command again to resume")
        sys.exit(130)
