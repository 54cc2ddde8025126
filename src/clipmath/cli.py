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
from typing import Annotated, Any, Optional

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


# ---- eval -------------------------------------------------------------------------------------------------
def _float_list(ctx: typer.Context, values: Optional[list[float]], option: str) -> Optional[list[float]]:
    """``--lam 1 2``: click gives the first value to the option and the rest as extra arguments."""
    extra = list(ctx.args)
    if extra and not values:
        raise ClipmathError(f"unexpected arguments: {' '.join(extra)}")
    try:
        more = [float(value) for value in extra]
    except ValueError:
        raise ClipmathError(f"unexpected arguments: {' '.join(extra)} ({option} takes numbers)") from None
    return (list(values or []) + more) or None


def _method_checkpoints(entries: Optional[list[str]], selected: list[str]) -> dict[str, str]:
    """``--checkpoint METHOD=PATH`` (repeatable), or a bare ``PATH`` when exactly one learned method is selected."""
    from clipmath.compose import learned_methods

    learned = [m for m in selected if m in learned_methods()]
    out: dict[str, str] = {}
    for entry in entries or []:
        method_name, sep, path = entry.partition("=")
        if sep and method_name in learned_methods():
            out[method_name] = path
        elif len(learned) == 1:
            out[learned[0]] = entry
        else:
            raise ClipmathError(f"--checkpoint {entry}: write METHOD=PATH (e.g. combiner=runs/combiner)")
    return out


@app.command("eval", context_settings={"allow_extra_args": True})
def eval_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Benchmark: fashioniq, cirr, circo or simat.")],
    path: Annotated[Path, typer.Option("--path", "-p", help="The benchmark folder, in its official layout.")],
    split: Annotated[
        Optional[str],
        typer.Option(
            help="Split: val (FashionIQ, CIRR, CIRCO; default), test1 (CIRR), test (CIRCO), dev|test (SIMAT)."
        ),
    ] = None,
    method: Annotated[
        Optional[list[str]],
        typer.Option("--method", help="Compose method (repeatable); default sum, or delta on SIMAT."),
    ] = None,
    methods: Annotated[
        Optional[str],
        typer.Option(help="'all' (every method on the same cached gallery, side by side) or a comma list."),
    ] = None,
    checkpoint: Annotated[
        Optional[list[str]],
        typer.Option(help="METHOD=PATH: trained weights of a learned method (repeatable; PATH alone for one)."),
    ] = None,
    category: Annotated[
        Optional[str], typer.Option(help="FashionIQ: only this category (dress, shirt or toptee).")
    ] = None,
    lam: Annotated[
        Optional[list[float]], typer.Option("--lam", help="SIMAT: λ values, e.g. --lam 1 2 (default 1).")
    ] = None,
    oracle: Annotated[
        str,
        typer.Option(
            help="SIMAT judge: labels (ground-truth triplets) or oscar (PATH/simat_db/oscar_similarity_matrix.pt, "
            "the paper's rule)."
        ),
    ] = "labels",
    caption_orders: Annotated[
        str,
        typer.Option(help="FashionIQ: both (average both caption orders, as SEARLE) or one (as CLIP4Cir)."),
    ] = "both",
    limit: Annotated[
        Optional[int], typer.Option(min=1, help="Only the first N queries (a quick check; not comparable numbers).")
    ] = None,
    submission: Annotated[
        Optional[Path],
        typer.Option(help="CIRR/CIRCO: write the validated server file(s) here (CIRR adds _cirr_recall[_subset])."),
    ] = None,
    cache: Annotated[
        Optional[Path],
        typer.Option(help="Feature-cache root (default: <clipmath cache>/eval); one store per model and split."),
    ] = None,
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: Annotated[
        str, typer.Option(help="clip (resize + centre crop) or targetpad (SEARLE/CLIP4Cir: pad to square first).")
    ] = "clip",
    batch_size: Annotated[int, typer.Option(min=1, help="Images and texts per encoder batch.")] = 64,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: torch's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate compose methods on FashionIQ, CIRR, CIRCO or SIMAT: a table of the official metrics.

    Gallery features are cached per model, split and preprocessing, so later runs encode nothing.
    """
    from clipmath.encoders import PREPROCESSING_CHOICES, load_encoder
    from clipmath.eval.harness import (
        DEFAULT_METHODS,
        EvalConfig,
        evaluate,
        load_benchmark,
        resolve_methods,
        write_submissions,
    )

    lams = _float_list(ctx, lam, "--lam")
    benchmark = dataset.lower()
    if preprocessing not in PREPROCESSING_CHOICES:
        raise ClipmathError(f"--preprocessing is one of {', '.join(PREPROCESSING_CHOICES)}, not {preprocessing!r}")
    if benchmark not in DEFAULT_METHODS:
        raise ClipmathError(f"unknown benchmark '{dataset}': use fashioniq, cirr, circo or simat")
    if method and methods:
        raise ClipmathError("give --method or --methods, not both")
    selection = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(method or [])
    selection = selection or [DEFAULT_METHODS[benchmark]]
    checkpoints = _method_checkpoints(checkpoint, selection)
    chosen, skipped = resolve_methods(selection, checkpoints)
    if lams and benchmark != "simat":
        raise ClipmathError("--lam applies to SIMAT only")
    if oracle not in ("labels", "oscar"):
        raise ClipmathError(f"--oracle is labels or oscar, not {oracle!r}")
    if submission is not None:
        if benchmark not in ("cirr", "circo"):
            raise ClipmathError("--submission: only CIRR and CIRCO have evaluation servers")
        if limit is not None:
            raise ClipmathError("--submission needs every query: drop --limit")
    datasets = load_benchmark(benchmark, path, split, category)
    chosen_split = datasets[0].split
    if benchmark in ("cirr", "circo") and not datasets[0].has_targets and submission is None:  # type: ignore[union-attr]
        raise ClipmathError(
            f"{benchmark} {chosen_split} has no ground truth: pass --submission OUT.json to write the server file"
        )
    judge = None
    if benchmark == "simat" and oracle == "oscar":
        from clipmath.eval.simat import CaptionScoreOracle

        judge = CaptionScoreOracle.from_file(path / "simat_db" / "oscar_similarity_matrix.pt")
    config = EvalConfig(
        lams=tuple(lams or (1.0,)),
        limit=limit,
        caption_orders=caption_orders,
        oracle=judge,
        batch_size=batch_size,
        progress=not (quiet or as_json),
    )
    if threads:
        import torch

        torch.set_num_threads(threads)
    encoder = load_encoder(model, device=device, preprocessing=preprocessing)
    if not as_json:
        err.print(f"model: {encoder.info.label()}", markup=False)
    report = evaluate(datasets, encoder, chosen, cache, config, skipped)
    if not report.rows:
        raise ClipmathError(
            f"no selected method runs on {benchmark}: " + "; ".join(f"{m} {r}" for m, r in report.skipped.items())
        )
    written = write_submissions(report, submission) if submission is not None else []
    if as_json:
        payload = report.to_dict()
        payload["submissions"] = [str(p) for p in written]
        _emit_json(payload)
        return
    header, rows = report.table()
    title = f"{benchmark} {chosen_split} · {report.num_queries} queries · preprocessing {report.preprocessing}"
    table = Table(title=escape(title), caption=escape(f"model: {report.model}"), title_justify="left")
    for column in header:
        table.add_column(escape(column), justify="left" if column == "method" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[escape(cell) for cell in row])
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    narrow = out.width
    out.width = max(narrow, sum(widths) + 3 * len(widths) + 1)  # never cut a metric name short
    try:
        out.print(table)
    finally:
        out.width = narrow
    for note in report.notes():
        out.print(f"note: {note}", markup=False)
    for file in written:
        out.print(f"submission: {file}", markup=False)
    out.print(
        f"gallery: {report.gallery_images} images, {report.encoded_images} encoded this run "
        f"(cache: {report.store}); {report.seconds:.1f}s",
        markup=False,
    )


# ---- serve ------------------------------------------------------------------------------------------------
@app.command()
def serve(
    store: Annotated[Path, typer.Argument(help="Store folder to serve.")],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    token: Annotated[
        Optional[str],
        typer.Option(
            envvar="CLIPMATH_TOKEN",
            show_envvar=True,
            help="Token every API call must carry (Authorization: Bearer).",
        ),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    index_kind: Annotated[
        str, typer.Option("--index", help="exact, flat, hnsw, ivfpq or a FAISS factory string.")
    ] = "exact",
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Default number of results.")] = 12,
    max_k: Annotated[int, typer.Option(min=1, max=1000, help="Largest k a request may ask for.")] = 100,
    max_upload_mb: Annotated[float, typer.Option(min=0.01, help="Largest accepted upload, in MB.")] = 20.0,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest accepted image (width × height).")] = 50_000_000,
    checkpoint: Annotated[
        Optional[list[str]],
        typer.Option(
            help="METHOD=PATH: trained weights of a learned compose method to offer (repeatable).",
        ),
    ] = None,
    caption_lm: Annotated[
        Optional[str],
        typer.Option(help="Enable the caption endpoint with this language model (auto, smollm2-135m, gpt2, a folder)."),
    ] = None,
) -> None:
    """Serve a store over HTTP: a JSON API (documented at /docs) and a web page for composed search."""
    try:
        from clipmath.serve import ServeConfig, check_port_free, create_app, run_server
    except ImportError as exc:
        raise ClipmathError(
            f"serving needs the serve extra ({exc.name} is missing): pip install 'clipmath[serve]'"
        ) from None
    from clipmath.retrieval import Retriever, RetrieverConfig

    checkpoints = {}
    for entry in checkpoint or []:
        method_name, _, path = entry.partition("=")
        if not method_name or not path:
            raise ClipmathError(f"--checkpoint takes METHOD=PATH, got {entry!r}")
        checkpoints[method_name] = path
    config = ServeConfig(
        host=host,
        port=port,
        token=token or None,
        max_upload_bytes=int(max_upload_mb * 1e6),
        max_pixels=max_pixels,
        default_k=min(k, max_k),
        max_k=max_k,
        index=index_kind,
        checkpoints=checkpoints,
    )
    config.check()
    check_port_free(host, port)  # before the model loads
    retriever = Retriever.open(store, model=model, device=device, config=RetrieverConfig(index=index_kind))
    web_app = create_app(retriever, config, captioner=_zerocap_captioner(caption_lm, retriever.encoder, device))
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{port}/" + (f"#token={token}" if token else "")
    err.print(f"model: {escape(retriever.encoder.info.label())}")
    err.print(
        f"serving {len(retriever.snapshot)} images from {escape(str(store))} at {escape(address)} "
        f"(API docs: /docs); Ctrl-C stops"
    )
    run_server(web_app, config)


def _zerocap_captioner(lm_name: Optional[str], encoder: Any, device: str) -> Any:
    """A server captioner running ZeroCap (run.py defaults) on each subject's embedding; None when not asked for."""
    if not lm_name:
        return None
    from clipmath.caption import caption as run_caption
    from clipmath.caption import load_language_model
    from clipmath.serve.captioning import FunctionCaptioner

    language_model = load_language_model(lm_name, device=device)

    def caption_subjects(subjects: list) -> list[str]:
        return [run_caption(subject.vector, language_model, encoder)[0].full_text for subject in subjects]

    return FunctionCaptioner(f"ZeroCap · {language_model.label()}", caption_subjects)


# ---- caption ----------------------------------------------------------------------------------------------
@app.command()
def caption(
    image: Annotated[Optional[str], typer.Option("--image", "-i", help="Image to caption.")] = None,
    expr: Annotated[
        Optional[str],
        typer.Option(
            "--expr", "-e", help="Caption an expression: '+woman.jpg +king.jpg -man.jpg' (ZeroCap arithmetic)."
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(help="ZeroCap option set: caption, arithmetic, real-world or ocr (options below override it)."),
    ] = "caption",
    cond_text: Annotated[Optional[str], typer.Option("--cond-text", help="Prompt the caption continues.")] = None,
    beam_size: Annotated[Optional[int], typer.Option(min=1, help="Beams (ZeroCap: 5).")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=1, help="Maximum caption length in LM tokens (15).")] = None,
    num_iterations: Annotated[
        Optional[int], typer.Option(min=0, help="Context optimisation steps per token (5); 0 = plain LM decoding.")
    ] = None,
    end_factor: Annotated[Optional[float], typer.Option(help="End-token boost from the second token (1.01).")] = None,
    fusion_factor: Annotated[Optional[float], typer.Option(help="Weight of the shifted distribution (0.99).")] = None,
    grad_norm_factor: Annotated[Optional[float], typer.Option(help="Gradient norm exponent (0.9).")] = None,
    reset_context_delta: Annotated[
        Optional[bool], typer.Option(help="Recompute a clean context before every token (ZeroCap default: on).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (decoding is deterministic under it).")] = 0,
    lm: Annotated[str, typer.Option("--lm", help="Language model: auto, smollm2-135m, gpt2, a folder.")] = "auto",
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Caption an image or an image/text expression with CLIP-guided LM decoding (ZeroCap)."""
    from dataclasses import replace as replace_fields

    from clipmath.caption import PRESETS, load_language_model
    from clipmath.caption import caption as run_caption
    from clipmath.compose import CompositionQuery, get_composer, parse_expression
    from clipmath.encoders import load_encoder

    if (image is None) == (expr is None):
        raise ClipmathError("give exactly one of --image or --expr")
    if preset not in PRESETS:
        raise ClipmathError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    terms = parse_expression(expr) if expr else []
    encoder = load_encoder(model, device=device)
    query = CompositionQuery(terms=terms) if expr else CompositionQuery(reference=image)
    target = get_composer("expr" if expr else "image").compose(encoder, [query])[0]
    overrides = {
        "cond_text": cond_text,
        "beam_size": beam_size,
        "target_seq_length": max_length,
        "num_iterations": num_iterations,
        "end_factor": end_factor,
        "fusion_factor": fusion_factor,
        "grad_norm_factor": grad_norm_factor,
        "reset_context_delta": reset_context_delta,
        "seed": seed,
    }
    config = replace_fields(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    language_model = load_language_model(lm, device=device)
    if not as_json:
        err.print(f"model: {encoder.info.label()} · language model: {language_model.label()}", markup=False)
    captions = run_caption(target, language_model, encoder, config, progress=not as_json)
    if as_json:
        _emit_json(
            {
                "model": encoder.info.label(),
                "language_model": language_model.label(),
                "config": asdict(config),
                "captions": [
                    {"text": c.full_text, "clip_score": c.clip_score, "lm_score": c.lm_score} for c in captions
                ],
            }
        )
        return
    for c in captions:
        out.print(f"{c.clip_score:.3f}  {c.full_text}", markup=False)


@app.command("eval-captions")
def eval_captions(
    predictions: Annotated[Path, typer.Argument(help="JSON of predictions with their references.")],
    no_meteor: Annotated[bool, typer.Option("--no-meteor", help="Skip METEOR (needs Java).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score captions with the COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr; PTB tokenisation)."""
    from clipmath.caption import score_caption_file

    scores = score_caption_file(predictions, meteor=not no_meteor)
    percent = scores.percent()
    if as_json:
        _emit_json({"count": scores.count, "percent": percent})
        return
    out.print(f"{scores.count} captions scored ({predictions})", markup=False)
    for name, value in percent.items():
        out.print(f"{name:>8}: {'skipped' if value is None else f'{value:.2f}'}", markup=False)


# ---- train ------------------------------------------------------------------------------------------------
# `clipmath train adapter|finetune|combiner|oti|phi`: one command per learned method (see docs/training.md).
train_app = typer.Typer(
    help="Train the learned compose methods. Checkpoints are folders of safetensors + JSON (config inside); "
    "use them with `clipmath search --method combiner|adapted-delta|searle|oti --checkpoint PATH`.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

_TRAIN_CONTEXT = {"allow_extra_args": True}  # lets `--seeds 1 2 3` take several values
DEFAULT_SEARLE_PROMPT = "a photo of $ that {caption}"

OutputOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Checkpoint to write: a folder (or NAME.safetensors + NAME.json). "
        "An unfinished run there is resumed; with --seeds, one sub-folder per seed.",
    ),
]
OtiOutputOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Checkpoint to write: a folder (or NAME.safetensors + NAME.json). "
        "An unfinished run there is resumed after its last saved batch.",
    ),
]
TrainModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model whose embedding space to train in: auto, offline-imagenet-minilm, "
        "tiny-random-clip, a hub name or a local folder. The checkpoint only works with this model.",
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Random seed (weights, data order, dropout).")]
SeedsOpt = Annotated[
    Optional[list[int]],
    typer.Option(
        "--seeds",
        help="Train once per seed (e.g. --seeds 1 2 3) into OUTPUT/seed-N and report the "
        "validation metric and final loss as mean ± std.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option("--resume/--no-resume", help="Continue an unfinished run in --output (--no-resume overwrites it)."),
]
AmpOpt = Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (no effect on CPU).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option(min=1, help="Stop after this many optimiser steps in all.")]
GradClipOpt = Annotated[Optional[float], typer.Option(min=0.0, help="Clip the gradient norm to this value.")]
CacheOpt = Annotated[
    Optional[Path], typer.Option(help="Folder for cached features (reused by later runs, seeds and epochs).")
]
TrainPreprocessingOpt = Annotated[
    str,
    typer.Option(
        help="clip (resize + centre crop) or targetpad (pad to square first, as CLIP4Cir/SEARLE); "
        "index the gallery with the same."
    ),
]
ImagesRootOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--images", help="Folder that relative image paths in the file are under (default: the file's folder)."
    ),
]
TripletsOpt = Annotated[
    Path,
    typer.Option(
        "--triplets",
        help="Training triplets: JSON list of {reference, caption, target}, JSON "
        "lines, or TSV reference<TAB>caption<TAB>target.",
    ),
]
ValTripletsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--val-triplets",
        help="Held-out triplets (same formats as --triplets): Recall@1/5/10 and mean rank after every "
        "--validate-every epochs (OTI: once, at the end).",
    ),
]
ValImagesOpt = Annotated[
    Optional[Path],
    typer.Option("--val-images", help="Folder that --val-triplets paths are under (default: the file's folder)."),
]
ValGalleryOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--val-gallery",
        help="Rank validation targets among the images of this folder (default: the validation triplets' own images).",
    ),
]
ValDatasetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--val-dataset",
        help="Validate on a benchmark instead, with `clipmath eval`'s metrics: fashioniq, cirr or circo "
        "(simat for adapter); needs --val-path.",
    ),
]
ValPathOpt = Annotated[
    Optional[Path], typer.Option("--val-path", help="Folder of --val-dataset, in the benchmark's official layout.")
]
ValSplitOpt = Annotated[
    Optional[str], typer.Option("--val-split", help="Split of --val-dataset (default: val; SIMAT: dev).")
]
MonitorOpt = Annotated[
    Optional[str], typer.Option(help="Metric summarised across --seeds first (default: recall@1 when validating).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(min=1, help="CPU threads for torch (default: torch's choice; 1 is often fastest for small batches)."),
]
SaveEveryOpt = Annotated[int, typer.Option(min=1, help="Epochs between checkpoint writes (the last is always saved).")]
ValidateEveryOpt = Annotated[
    int, typer.Option(min=1, help="Epochs between validations (the last epoch is always validated).")
]
LrHelp = "AdamW learning rate."
WdHelp = "AdamW weight decay."


def _seed_list(ctx: typer.Context, seeds: Optional[list[int]]) -> Optional[list[int]]:
    """``--seeds 1 2 3``: click gives the first value to the option and the rest as extra arguments."""
    extra = list(ctx.args)
    if extra and not seeds:
        raise ClipmathError(f"unexpected arguments: {' '.join(extra)}")
    try:
        more = [int(value) for value in extra]
    except ValueError:
        raise ClipmathError(f"unexpected arguments: {' '.join(extra)} (--seeds takes integers)") from None
    values = list(seeds or []) + more
    if len(set(values)) != len(values):
        raise ClipmathError("--seeds: each seed once")
    return values or None


def _train_encoder(model: Optional[str], device: str, preprocessing: str, as_json: bool, threads: Optional[int]):
    import torch

    from clipmath.encoders import load_encoder

    if threads:
        torch.set_num_threads(threads)
    encoder = load_encoder(model, device=device, preprocessing=preprocessing)
    if not as_json:
        err.print(f"model: {encoder.info.label()}", markup=False)
    return encoder


def _triplet_validator(encoder, val_triplets, val_images, val_gallery, reencode: bool = False):
    if val_triplets is None:
        return None
    from clipmath.train.data import image_files, read_triplets
    from clipmath.train.validate import RetrievalValidator

    triplets = read_triplets(val_triplets, val_images)
    gallery = image_files(val_gallery) if val_gallery else None
    try:
        return RetrievalValidator.from_triplets(encoder, triplets, gallery, reencode=reencode)
    except ValueError as exc:
        raise ClipmathError(str(exc)) from None


def _benchmark_validator(
    encoder, name, folder, split, needs, method: str, other_given: bool, progress: bool, reencode: bool = False
):
    """``--val-dataset NAME --val-path DIR``: the benchmark's validation split, scored by the eval harness."""
    if name is None:
        if folder is not None or split is not None:
            raise ClipmathError("--val-path and --val-split go with --val-dataset")
        return None
    if other_given:
        raise ClipmathError("give --val-dataset or the other --val-* options, not both")
    if folder is None:
        raise ClipmathError("--val-dataset needs --val-path DIR")
    from clipmath.eval.harness import BenchmarkValidator, EvalConfig, load_benchmark

    default_split = "dev" if name.lower() == "simat" else "val"
    config = EvalConfig(progress=progress, reencode=reencode)
    validator = BenchmarkValidator(load_benchmark(name, folder, split or default_split), encoder, config=config)
    validator.check_inputs(needs, method)
    return validator


def _run_training(make_task, config, output: Path, seeds, validate, resume: bool, encoder, as_json: bool) -> None:
    from clipmath.train.loop import fit, fit_seeds

    if validate is not None and config.monitor is None:
        config.monitor = getattr(validate, "monitor", "recall@1")
    if seeds:
        report = fit_seeds(make_task, config, seeds, output, validate, resume)
        results, summary = report.results, report.summary
    else:
        results, summary = [fit(make_task, config, output, validate, resume)], None
    payload = {
        "model": encoder.info.label(),
        "runs": [
            {
                "seed": r.seed,
                "checkpoint": str(r.checkpoint),
                "examples_per_s": r.examples_per_second,
                "history": r.history,
            }
            for r in results
        ],
    }
    if summary is not None:
        payload["summary"] = {name: {"mean": m, "std": s, "n": len(results)} for name, (m, s) in summary.items()}
    if as_json:
        _emit_json(payload)
        return
    for result in results:
        for record in result.history[result.resumed_from_epoch :]:
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in record.get("metrics", {}).items())
            out.print(f"seed {result.seed} epoch {record['epoch']}: loss {record['loss']:.4f}  {metrics}", markup=False)
        out.print(f"checkpoint: {result.checkpoint}  ({result.examples_per_second:.1f} examples/s)", markup=False)
    if summary is not None:
        for name, (mean, std) in summary.items():
            out.print(f"{name}: {mean:.4f} ± {std:.4f} over seeds {', '.join(map(str, seeds))}", markup=False)


_HELP_ADAPTER = (
    "SIMAT adaptation heads for --method adapted-delta: linear image and text heads on frozen features, "
    "trained on image–caption pairs with a symmetric contrastive loss, each head on its own modality."
)


def _train_config(config_class: type, values: dict) -> Any:
    """A training config from a command's options: every config field that the command has an option for."""
    from dataclasses import fields

    chosen = {f.name: values[f.name] for f in fields(config_class) if f.name in values}
    return config_class(**chosen, progress=not values["quiet"] and not values["as_json"])


@train_app.command("adapter", context_settings=_TRAIN_CONTEXT, help=_HELP_ADAPTER)
def train_adapter(
    ctx: typer.Context,
    output: OutputOpt,
    images: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder of training images (with --captions), or COCO "
            "image folder (with --coco; default ROOT/<split>)."
        ),
    ] = None,
    captions: Annotated[
        Optional[Path],
        typer.Option(help='Captions of --images: JSON {"file.jpg": [captions]} or TSV file<TAB>caption.'),
    ] = None,
    coco: Annotated[
        Optional[Path],
        typer.Option(help="COCO captions instead: a root holding annotations/captions_<split>.json, or that file."),
    ] = None,
    coco_split: Annotated[Optional[str], typer.Option(help="COCO split, e.g. train2017.")] = None,
    tau: Annotated[float, typer.Option(min=1e-4, help="Contrastive temperature τ.")] = 0.1,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the images.")] = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="Image–caption pairs per step.")] = 512,
    lr: Annotated[float, typer.Option(min=0.0, help=LrHelp)] = 1e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0, help=WdHelp)] = 0.0,
    val_captions: Annotated[
        Optional[Path],
        typer.Option(help="Held-out captions file (JSON or TSV): caption→image Recall@K after every epoch."),
    ] = None,
    val_images: Annotated[Optional[Path], typer.Option(help="Folder of the --val-captions images.")] = None,
    val_dataset: ValDatasetOpt = None,
    val_path: ValPathOpt = None,
    val_split: ValSplitOpt = None,
    model: TrainModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: TrainPreprocessingOpt = "clip",
    cache: CacheOpt = None,
    seed: SeedOpt = 42,
    seeds: SeedsOpt = None,
    save_every: SaveEveryOpt = 1,
    validate_every: ValidateEveryOpt = 1,
    max_steps: MaxStepsOpt = None,
    grad_clip: GradClipOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = True,
    monitor: MonitorOpt = None,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from clipmath.compose.adapted_delta import AdaptedDelta
    from clipmath.train.adapter import adapter_task_factory
    from clipmath.train.config import AdapterConfig
    from clipmath.train.data import read_captions, read_coco_captions
    from clipmath.train.features import FeatureCache
    from clipmath.train.validate import CaptionValidator

    seed_list = _seed_list(ctx, seeds)
    if (coco is None) == (captions is None):
        raise ClipmathError("give either --images DIR --captions FILE, or --coco PATH")
    if captions is not None and images is None:
        raise ClipmathError("--captions needs --images DIR")
    data = read_coco_captions(coco, images, coco_split) if coco else read_captions(images, captions)
    encoder = _train_encoder(model, device, preprocessing, as_json, threads)
    validate = _benchmark_validator(
        encoder, val_dataset, val_path, val_split, AdaptedDelta.needs, "adapter", val_captions is not None,
        not quiet and not as_json,
    )  # fmt: skip
    if val_captions is not None:
        if val_images is None:
            raise ClipmathError("--val-captions needs --val-images DIR")
        validate = CaptionValidator(encoder, read_captions(val_images, val_captions))
    config = _train_config(AdapterConfig, locals())
    factory = adapter_task_factory(encoder, data, FeatureCache(encoder, cache, progress=config.progress))
    _run_training(factory, config, output, seed_list, validate, resume, encoder, as_json)


_HELP_FINETUNE = (
    "CLIP4Cir stage 1: fine-tune the CLIP towers so that img(reference) + text(caption) finds img(target). "
    "Writes a model folder: index the gallery and train the Combiner with --model OUTPUT."
)


@train_app.command("finetune", context_settings=_TRAIN_CONTEXT, help=_HELP_FINETUNE)
def train_finetune(
    ctx: typer.Context,
    output: OutputOpt,
    triplets: TripletsOpt,
    images: ImagesRootOpt = None,
    towers: Annotated[str, typer.Option(help="Which towers to fine-tune: both, image or text.")] = "both",
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute activations in the backward pass (less memory, slower).")
    ] = False,
    logit_scale: Annotated[float, typer.Option(min=0.0, help="Scale of the cosine logits in the loss.")] = 100.0,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the triplets.")] = 20,
    batch_size: Annotated[int, typer.Option(min=2, help="Triplets per step (the other targets are negatives).")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help=LrHelp)] = 2e-6,
    weight_decay: Annotated[float, typer.Option(min=0.0, help=WdHelp)] = 0.01,
    val_triplets: ValTripletsOpt = None,
    val_images: ValImagesOpt = None,
    val_gallery: ValGalleryOpt = None,
    val_dataset: ValDatasetOpt = None,
    val_path: ValPathOpt = None,
    val_split: ValSplitOpt = None,
    model: TrainModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: TrainPreprocessingOpt = "clip",
    seed: SeedOpt = 42,
    seeds: SeedsOpt = None,
    save_every: SaveEveryOpt = 1,
    validate_every: ValidateEveryOpt = 1,
    max_steps: MaxStepsOpt = None,
    grad_clip: GradClipOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = True,
    monitor: MonitorOpt = None,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from clipmath.train.clip4cir import FinetuneTask
    from clipmath.train.config import FinetuneConfig
    from clipmath.train.data import read_triplets

    seed_list = _seed_list(ctx, seeds)
    if output.suffix == ".safetensors":
        raise ClipmathError("a fine-tuned model is a folder: give --output a folder path")
    data = read_triplets(triplets, images)
    encoder = _train_encoder(model, device, preprocessing, as_json, threads)
    validate = _benchmark_validator(
        encoder, val_dataset, val_path, val_split, ("reference", "text"), "finetune", val_triplets is not None,
        not quiet and not as_json, reencode=True,
    ) or _triplet_validator(encoder, val_triplets, val_images, val_gallery, reencode=True)  # fmt: skip
    config = _train_config(FinetuneConfig, locals())
    if seed_list and len(seed_list) > 1:
        raise ClipmathError("fine-tuning changes the model in place: run one seed per command")
    _run_training(
        lambda c: FinetuneTask(encoder, c, data), config, output, seed_list, validate, resume, encoder, as_json
    )


_HELP_COMBINER = (
    "CLIP4Cir stage 2: the Combiner network for --method combiner, trained on cached features of a frozen "
    "encoder (the fine-tuned one from `clipmath train finetune`, or any other)."
)


@train_app.command("combiner", context_settings=_TRAIN_CONTEXT, help=_HELP_COMBINER)
def train_combiner(
    ctx: typer.Context,
    output: OutputOpt,
    triplets: TripletsOpt,
    images: ImagesRootOpt = None,
    projection_dim: Annotated[
        Optional[int], typer.Option(min=1, help="Width of the two input projections (default 4 × the embedding size).")
    ] = None,
    hidden_dim: Annotated[
        Optional[int], typer.Option(min=1, help="Width of the hidden layers (default 8 × the embedding size).")
    ] = None,
    dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="Dropout in the Combiner.")] = 0.5,
    logit_scale: Annotated[float, typer.Option(min=0.0, help="Scale of the cosine logits in the loss.")] = 100.0,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the triplets.")] = 300,
    batch_size: Annotated[int, typer.Option(min=2, help="Triplets per step (the other targets are negatives).")] = 4096,
    lr: Annotated[float, typer.Option(min=0.0, help=LrHelp)] = 2e-5,
    weight_decay: Annotated[float, typer.Option(min=0.0, help=WdHelp)] = 0.01,
    val_triplets: ValTripletsOpt = None,
    val_images: ValImagesOpt = None,
    val_gallery: ValGalleryOpt = None,
    val_dataset: ValDatasetOpt = None,
    val_path: ValPathOpt = None,
    val_split: ValSplitOpt = None,
    model: TrainModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: TrainPreprocessingOpt = "clip",
    cache: CacheOpt = None,
    seed: SeedOpt = 42,
    seeds: SeedsOpt = None,
    save_every: SaveEveryOpt = 10,
    validate_every: ValidateEveryOpt = 1,
    max_steps: MaxStepsOpt = None,
    grad_clip: GradClipOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = True,
    monitor: MonitorOpt = None,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from clipmath.train.clip4cir import combiner_task_factory
    from clipmath.train.config import CombinerConfig
    from clipmath.train.data import read_triplets
    from clipmath.train.features import FeatureCache

    seed_list = _seed_list(ctx, seeds)
    data = read_triplets(triplets, images)
    encoder = _train_encoder(model, device, preprocessing, as_json, threads)
    config = _train_config(CombinerConfig, locals())
    features = FeatureCache(encoder, cache, progress=config.progress)
    factory = combiner_task_factory(encoder, data, features)
    validate = _benchmark_validator(
        encoder, val_dataset, val_path, val_split, ("reference", "text"), "combiner", val_triplets is not None,
        config.progress,
    )  # fmt: skip
    if validate is None:
        validate = _triplet_validator(encoder, val_triplets, val_images, val_gallery)
        if validate is not None:
            validate.cache = features
    _run_training(factory, config, output, seed_list, validate, resume, encoder, as_json)


_HELP_OTI = (
    "SEARLE optimisation-based textual inversion: one pseudo-word token per image, for --method oti (other "
    "images are inverted at query time) and as the teacher of `clipmath train phi`."
)


@train_app.command("oti", help=_HELP_OTI)
def train_oti(
    output: OtiOutputOpt,
    images: Annotated[
        Path,
        typer.Option(
            "--images", help="Folder of images to invert (searched recursively), e.g. a benchmark's reference images."
        ),
    ],
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps per image.")] = 350,
    lr: Annotated[float, typer.Option(min=0.0, help=LrHelp)] = 2e-2,
    weight_decay: Annotated[float, typer.Option(min=0.0, help=WdHelp)] = 0.01,
    batch_size: Annotated[int, typer.Option(min=1, help="Images inverted together.")] = 32,
    ema_decay: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Decay of the exponential moving average of the token (the result).")
    ] = 0.99,
    lambda_cos: Annotated[float, typer.Option(min=0.0, help="Weight of the image–prompt cosine loss.")] = 1.0,
    lambda_reg: Annotated[
        float,
        typer.Option(min=0.0, help="Weight of the concept-phrase regulariser (SEARLE's lambda_gpt; 0 turns it off)."),
    ] = 0.5,
    top_k: Annotated[int, typer.Option(min=1, help="Concepts associated with each image.")] = 15,
    concepts: Annotated[
        Optional[Path],
        typer.Option(
            help="Concept vocabulary: JSON {concept: [phrases that "
            "contain it]} or text, one concept per line "
            "(default: a small built-in list)."
        ),
    ] = None,
    template: Annotated[str, typer.Option(help="Prompt whose feature must match the image's.")] = "a photo of $",
    prompt: Annotated[str, typer.Option(help="Retrieval prompt stored for --method oti.")] = DEFAULT_SEARLE_PROMPT,
    save_every: Annotated[int, typer.Option(min=1, help="Batches between checkpoint writes.")] = 10,
    val_triplets: ValTripletsOpt = None,
    val_images: ValImagesOpt = None,
    val_gallery: ValGalleryOpt = None,
    val_dataset: ValDatasetOpt = None,
    val_path: ValPathOpt = None,
    val_split: ValSplitOpt = None,
    model: TrainModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: TrainPreprocessingOpt = "clip",
    cache: CacheOpt = None,
    seed: SeedOpt = 42,
    amp: AmpOpt = True,
    resume: ResumeOpt = True,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from clipmath.compose.searle import ConceptVocabulary
    from clipmath.train.config import OtiConfig
    from clipmath.train.data import image_files
    from clipmath.train.features import FeatureCache
    from clipmath.train.searle import run_oti

    files = image_files(images)
    vocabulary = ConceptVocabulary.load(concepts) if lambda_reg else None
    encoder = _train_encoder(model, device, preprocessing, as_json, threads)
    config = _train_config(OtiConfig, locals())
    validate = _benchmark_validator(
        encoder, val_dataset, val_path, val_split, ("reference", "text"), "oti", val_triplets is not None,
        config.progress,
    ) or _triplet_validator(encoder, val_triplets, val_images, val_gallery)  # fmt: skip
    result = run_oti(
        encoder,
        files,
        config,
        output,
        vocabulary,
        FeatureCache(encoder, cache, progress=config.progress),
        validate,
        resume,
    )
    payload = {
        "model": encoder.info.label(),
        "checkpoint": str(result.checkpoint),
        "images": result.images,
        "inverted": result.inverted,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
        "images_per_s": result.examples_per_second,
        "metrics": result.metrics,
    }
    if as_json:
        _emit_json(payload)
        return
    out.print(
        f"inverted {result.inverted} image(s) ({result.images} in the checkpoint) at "
        f"{result.examples_per_second:.2f} images/s; loss {result.first_loss:.4f} → {result.last_loss:.4f}",
        markup=False,
    )
    if result.metrics:
        out.print("  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()), markup=False)
    out.print(f"checkpoint: {result.checkpoint}", markup=False)


_HELP_PHI = (
    "SEARLE's textual-inversion network phi for --method searle: image feature → pseudo-word token, "
    "distilled from OTI tokens with the concept-phrase regulariser."
)


@train_app.command("phi", context_settings=_TRAIN_CONTEXT, help=_HELP_PHI)
def train_phi(
    ctx: typer.Context,
    output: OutputOpt,
    oti: Annotated[
        Path,
        typer.Option(
            "--oti",
            help="OTI checkpoint (`clipmath train oti`) whose tokens phi learns to predict from the image features.",
        ),
    ],
    concepts: Annotated[
        Optional[Path], typer.Option(help="Concept vocabulary for the regulariser (default: the one the OTI run used).")
    ] = None,
    hidden_dim: Annotated[
        Optional[int], typer.Option(min=1, help="Hidden width of phi (default 4 × the embedding size).")
    ] = None,
    dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="Dropout in phi.")] = 0.5,
    lambda_distil: Annotated[float, typer.Option(min=0.0, help="Weight of the distillation loss.")] = 1.0,
    lambda_reg: Annotated[
        float,
        typer.Option(min=0.0, help="Weight of the concept-phrase regulariser (SEARLE's lambda_gpt; 0 turns it off)."),
    ] = 0.75,
    temperature: Annotated[float, typer.Option(min=1e-4, help="Temperature of the distillation loss.")] = 0.25,
    top_k: Annotated[int, typer.Option(min=1, help="Concepts associated with each image.")] = 150,
    prompt: Annotated[str, typer.Option(help="Retrieval prompt stored for --method searle.")] = DEFAULT_SEARLE_PROMPT,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the OTI tokens.")] = 100,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per step.")] = 256,
    lr: Annotated[float, typer.Option(min=0.0, help=LrHelp)] = 1e-4,
    weight_decay: Annotated[float, typer.Option(min=0.0, help=WdHelp)] = 0.01,
    val_triplets: ValTripletsOpt = None,
    val_images: ValImagesOpt = None,
    val_gallery: ValGalleryOpt = None,
    val_dataset: ValDatasetOpt = None,
    val_path: ValPathOpt = None,
    val_split: ValSplitOpt = None,
    model: TrainModelOpt = "auto",
    device: DeviceOpt = "cpu",
    preprocessing: TrainPreprocessingOpt = "clip",
    seed: SeedOpt = 42,
    seeds: SeedsOpt = None,
    save_every: SaveEveryOpt = 5,
    validate_every: ValidateEveryOpt = 1,
    max_steps: MaxStepsOpt = None,
    grad_clip: GradClipOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = True,
    monitor: MonitorOpt = None,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from clipmath.compose.searle import ConceptVocabulary
    from clipmath.train.config import PhiConfig
    from clipmath.train.searle import phi_task_factory

    seed_list = _seed_list(ctx, seeds)
    encoder = _train_encoder(model, device, preprocessing, as_json, threads)
    config = _train_config(PhiConfig, locals())
    vocabulary = ConceptVocabulary.load(concepts) if concepts else None
    factory = phi_task_factory(encoder, oti, vocabulary)
    validate = _benchmark_validator(
        encoder, val_dataset, val_path, val_split, ("reference", "text"), "phi", val_triplets is not None,
        config.progress,
    ) or _triplet_validator(encoder, val_triplets, val_images, val_gallery)  # fmt: skip
    _run_training(factory, config, output, seed_list, validate, resume, encoder, as_json)


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
