"""``clipmath sync``: copy a store into a Milvus collection (Milvus Lite file or server), then keep it in step; the
search filters a Milvus index answers (declared here, used by ``clipmath search``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Optional

import typer

from clipmath.cli.options import JsonOpt, QuietOpt, StoreArg
from clipmath.cli.output import emit, key_values, status
from clipmath.cli.scale import RecallOpt
from clipmath.errors import ClipmathError

app = typer.Typer(add_completion=False)

SinceOpt = Annotated[
    Optional[str], typer.Option("--since", help="milvus index: only files modified on or after this date (YYYY-MM-DD).")
]
UntilOpt = Annotated[
    Optional[str], typer.Option("--until", help="milvus index: only files modified before this date (YYYY-MM-DD).")
]
CaptionFilterOpt = Annotated[
    Optional[str], typer.Option("--caption", help="milvus index: only items whose caption contains this text.")
]
MetaFilterOpt = Annotated[
    Optional[list[str]],
    typer.Option("--meta", help="milvus index: KEY=VALUE that a metadata field must equal (repeatable)."),
]


def milvus_filter(since: Optional[str], until: Optional[str], caption: Optional[str], meta: Optional[list[str]]) -> Any:
    """``clipmath search``'s filters only a ``milvus:URI`` collection answers (file time, caption, metadata
    fields) as a :class:`SearchFilter`, None when none is given. The query controls (folder, dates taken, camera,
    ...) apply to every index, this one included."""
    if not any((since, until, caption, meta)):
        return None
    from clipmath.search.milvus import SearchFilter

    pairs = []
    for entry in meta or []:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ClipmathError(f"--meta {entry}: write KEY=VALUE")
        pairs.append((key, value))
    return SearchFilter(None, _date(since, "--since"), _date(until, "--until"), caption, tuple(pairs))


def _date(text: Optional[str], option: str) -> Optional[float]:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        raise ClipmathError(f"{option} {text}: write a date as YYYY-MM-DD") from None


@app.command(
    epilog="Examples:\n\n  clipmath sync photos.store --to milvus:photos.db\n\n"
    "  clipmath sync photos.store --to milvus:http://milvus:19530 --collection photos --type IVF_SQ8 --recall 0.95\n\n"
    "  clipmath search photos.store -i cat.jpg -t 'in the snow' --index milvus:photos.db --folder trips"
)
def sync(
    store: StoreArg,
    to: Annotated[
        str, typer.Option("--to", help="milvus:PATH.db (Milvus Lite, embedded) or milvus:http://HOST:PORT (a server).")
    ],
    collection: Annotated[
        Optional[str], typer.Option("--collection", help="Collection name (default: clipmath, or URI#NAME).")
    ] = None,
    index_type: Annotated[
        Optional[str],
        typer.Option(
            "--type",
            help="Vector index: FLAT, IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ; a server also IVF_PQ, DISKANN, AUTOINDEX "
            "(default: the collection's, else HNSW).",
        ),
    ] = None,
    recall: RecallOpt = None,
    nlist: Annotated[int, typer.Option("--nlist", min=0, help="IVF lists (0: ~4 sqrt(n), as the FAISS kinds).")] = 0,
    token: Annotated[
        Optional[str],
        typer.Option("--token", envvar="CLIPMATH_MILVUS_TOKEN", show_default=False, help="Server token or USER:PASS."),
    ] = None,
    db_name: Annotated[
        Optional[str], typer.Option("--db-name", envvar="CLIPMATH_MILVUS_DB", help="Server database.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the server.")] = 10.0,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Rows per upsert.")] = 2000,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a Milvus collection hold exactly the store's items: the first run uploads, later runs send only what
    changed (adds, changed files, prunes). Safe to interrupt: run it again."""
    from clipmath.search import IndexParams
    from clipmath.search.milvus import MilvusTarget
    from clipmath.store.sync import SyncConfig, sync_store

    target = MilvusTarget.parse(to, collection=collection, token=token, db_name=db_name, timeout=timeout)
    config = SyncConfig(index_type=index_type, params=IndexParams(recall=recall, nlist=nlist), batch=batch)
    status(f"syncing {store} -> {target.where()}", as_json or quiet)
    report = sync_store(store, target, config, progress=not (as_json or quiet))
    tuning = report.tuning
    rows = [
        ("collection", report.target),
        ("upserted", report.upserted),
        ("deleted", report.deleted),
        ("unchanged", report.unchanged),
        ("items in the collection", report.total),
        ("read the collection back", "yes (first run or after an interrupted one)" if report.reconciled else "no"),
        ("index", f"{report.index_type} {report.index_params or ''}".strip()),
        ("query setting", report.query or "Milvus' default"),
        ("tuning", f"recall@{tuning['k']} {tuning['recall']:.3f} (target {tuning['target']:.2f})" if tuning else "-"),
        ("seconds", f"{report.seconds:.1f}"),
    ]
    if report.skipped:
        rows.append(("skipped (ids Milvus cannot hold)", report.skipped))
    emit(report.as_dict(), as_json, lambda: key_values(rows))
