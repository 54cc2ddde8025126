"""``clipmath serve``: a store over HTTP (JSON API + web page), optionally with ZeroCap captions.

Option defaults are :class:`~clipmath.serve.config.ServeConfig`'s. This module imports the serve extra (FastAPI), so
the CLI loads it only when ``serve`` runs or help is shown (see ``LAZY_COMMANDS`` in :mod:`clipmath.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli.options import (
    CheckpointsOpt,
    DeviceOpt,
    DtypeOpt,
    IndexKindOpt,
    KOpt,
    ModelOpt,
    StoreArg,
    ThreadsOpt,
    config_default,
    method_paths,
)
from clipmath.cli.output import status
from clipmath.cli.runtime import set_threads
from clipmath.serve.config import TOKEN_ENV, ServeConfig

app = typer.Typer(add_completion=False)  # one command: typer would give it completion options
_MIB = 1024 * 1024

_EXAMPLES = """Examples:

  clipmath serve photos.store

  CLIPMATH_TOKEN=secret clipmath serve photos.store --host 0.0.0.0 --port 8080 --index hnsw

  clipmath serve photos.store --checkpoint combiner=runs/combiner --caption-lm smollm2-135m

  clipmath serve clevr.store --diff-checkpoint runs/idc-caption
"""


@app.command(epilog=_EXAMPLES)
def serve(
    store: StoreArg,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs a token.")] = config_default(
        ServeConfig, "host"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = config_default(ServeConfig, "port"),
    token: Annotated[
        Optional[str],
        typer.Option(
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="Token every API call must carry (Authorization: Bearer).",
        ),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    index_kind: IndexKindOpt = "exact",
    k: KOpt = config_default(ServeConfig, "default_k"),
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = config_default(
        ServeConfig, "max_k"
    ),
    max_upload_mb: Annotated[float, typer.Option(min=0.01, help="Largest accepted upload, in MiB.")] = config_default(
        ServeConfig, "max_upload_bytes"
    )
    / _MIB,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Largest accepted upload image (width × height).")
    ] = config_default(ServeConfig, "max_pixels"),
    checkpoint: CheckpointsOpt = None,
    caption_lm: Annotated[
        Optional[str],
        typer.Option(
            help="Enable captions (and zero-shot difference captions) with this language model "
            "(auto, smollm2-135m, gpt2, a folder)."
        ),
    ] = None,
    diff_checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            help="Difference captions from this trained CLIP4IDC captioner (`clipmath train idc-caption`; "
            "trained on the store's model)."
        ),
    ] = None,
    decoder: Annotated[
        str,
        typer.Option(
            help="Caption decoder: magic (fast) or zerocap (slower) with --caption-lm; memory (nearest captions of "
            "--caption-corpus) or decap (--caption-checkpoint) need no language model."
        ),
    ] = "magic",
    caption_corpus: Annotated[
        Optional[str], typer.Option(help="memory/decap: the caption corpus (one caption a line, or JSON).")
    ] = None,
    caption_checkpoint: Annotated[Optional[str], typer.Option(help="decap: the trained decoder's folder.")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Serve a store over HTTP: a JSON API (documented at /docs) and a web page for composed search."""
    from clipmath.compose import learned_methods
    from clipmath.retrieval import Retriever, RetrieverConfig
    from clipmath.serve import check_port_free, create_app, run_server

    config = ServeConfig(
        host=host,
        port=port,
        token=token or None,
        max_upload_bytes=int(max_upload_mb * _MIB),
        max_pixels=max_pixels,
        default_k=min(k, max_k),
        max_k=max_k,
        index=index_kind,
        checkpoints=method_paths(checkpoint, learned_methods()),
        caption_lm=caption_lm,
        decoder=decoder,
        decoder_options={k: v for k, v in {"corpus": caption_corpus, "checkpoint": caption_checkpoint}.items() if v},
        difference_checkpoint=str(diff_checkpoint) if diff_checkpoint is not None else None,
    )
    config.check()
    check_port_free(host, port)  # before the model loads
    set_threads(threads)
    retriever = Retriever.open(store, model, device, RetrieverConfig(index=index_kind), dtype=dtype)
    web_app = create_app(retriever, config)
    captioner = web_app.state.captioner
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{port}/" + (f"#token={token}" if token else "")
    status(f"model: {retriever.encoder.info.label()}")
    if captioner is not None:
        status(f"captions: {captioner.captions_label or 'off'}; difference captions: {captioner.differences_label}")
    status(f"serving {len(retriever.snapshot)} images from {store} at {address} (API docs: /docs); Ctrl-C stops")
    run_server(web_app, config)
