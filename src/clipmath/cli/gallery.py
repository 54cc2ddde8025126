"""Gallery commands: ``index`` a folder into a store, ``search`` it, ``info`` about it; list ``methods``, ``models``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from clipmath.cli import scale, sync
from clipmath.cli.options import (
    DeviceOpt,
    DtypeOpt,
    EncodeBatchOpt,
    IndexKindOpt,
    JsonOpt,
    KOpt,
    ModelOpt,
    PreprocessingOpt,
    StoreArg,
    StoreOpt,
    ThreadsOpt,
    config_default,
)
from clipmath.cli.output import FIELD_FLAGS, emit, key_values, status, table
from clipmath.cli.photos import describe, page_facts, page_note, shown_id, summary_rows, with_query_controls
from clipmath.cli.runtime import load_model, set_threads
from clipmath.errors import ClipmathError
from clipmath.imageio import MAX_PIXELS
from clipmath.options import field_help
from clipmath.paths import existing_folder
from clipmath.store.filters import QueryControls
from clipmath.store.indexer import IndexConfig

app = typer.Typer()

_INDEX_EXAMPLES = """Examples:

  clipmath index photos/ --store photos.store

  clipmath index photos/ --store photos.store --prune --batch-size 64 --threads 4
"""


@app.command(epilog=_INDEX_EXAMPLES)
def index(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Folder of images (searched recursively), or webdataset tar shards: a brace pattern "
            "('shards/{00000..00099}.tar'), tar files, or a folder of them (img2dataset's output); or a table "
            "(.parquet/.csv/.tsv/.jsonl) of image paths with optional captions.",
            metavar="SOURCE...",
        ),
    ],
    store: StoreOpt,
    model: ModelOpt = "auto",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    preprocessing: PreprocessingOpt = None,
    batch_size: EncodeBatchOpt = 32,
    commit_every: Annotated[int, typer.Option(min=1, help="Images per atomic commit.")] = 256,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse images with more pixels (decompression bombs).")
    ] = MAX_PIXELS,
    prune: Annotated[bool, typer.Option(help="Forget files that are gone from the folder, and compact.")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Index files symlinks lead to outside the folder.")] = False,
    video_every: Annotated[float, typer.Option(help=field_help(IndexConfig, "video_every"))] = config_default(
        IndexConfig, "video_every"
    ),
    scene_threshold: Annotated[float, typer.Option(help=field_help(IndexConfig, "scene_threshold"))] = config_default(
        IndexConfig, "scene_threshold"
    ),
    max_frames: Annotated[int, typer.Option(help=field_help(IndexConfig, "max_frames"))] = config_default(
        IndexConfig, "max_frames"
    ),
    threads: ThreadsOpt = None,
    engine: scale.EngineOpt = "local",
    address: scale.AddressOpt = None,
    workers: scale.WorkersOpt = 2,
    gpus_per_worker: scale.GpusOpt = 0.0,
    files: scale.FilesOpt = None,
    store_dtype: scale.StoreDtypeOpt = None,
    captions: Annotated[
        bool, typer.Option("--captions", help="Also encode each item's caption (shards, tables) into STORE/text.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index (or update) a folder of images (and videos: a frame every few seconds and at each scene change) into
    a store: incremental, resumable, crash-safe."""
    from clipmath.cli.sources import index_source, index_source_on_ray, source_kind
    from clipmath.store import index_folder
    from clipmath.store.indexer import index_model
    from clipmath.store.manifest import check_store_folder

    folder, kind = sources[0], source_kind(sources)
    if kind == "folder":
        existing_folder(folder)
    check_store_folder(store)  # before the model loads
    model = index_model(store, model)
    config = IndexConfig(
        dtype=store_dtype,
        batch_size=batch_size,
        commit_every=commit_every,
        max_pixels=max_pixels,
        prune=prune,
        follow_symlinks=follow_symlinks,
        video_every=video_every,
        scene_threshold=scene_threshold,
        max_frames=max_frames,
    )
    ray_options = scale.RayCommand(model, device, dtype, preprocessing, address, workers, gpus_per_worker)
    if kind != "folder":
        if files is not None or (kind == "table" and scale.check_engine(engine) == "ray"):
            raise ClipmathError(f"a {kind} source is indexed without --files (and a table without --engine ray)")
        if scale.check_engine(engine) == "ray":
            report, folder, encoder = index_source_on_ray(sources, store, config, ray_options, as_json)
        else:
            encoder = load_model(model, device, preprocessing, dtype, threads, as_json, lazy=True)
            report, folder = index_source(kind, sources, store, encoder, config, as_json)
    elif scale.check_engine(engine) == "ray":
        report, encoder = scale.run_ray_index(folder, store, config, files, ray_options, as_json)
    else:
        encoder = load_model(model, device, preprocessing, dtype, threads, as_json, lazy=True)
        listed = scale.read_listed(files, folder)
        report = index_folder(store, folder, encoder, config, files=listed, progress=not as_json)
    caption_report = None
    if captions:
        from clipmath.store.captions import index_captions

        caption_report = index_captions(store, encoder, commit_every, batch_size, progress=not as_json)

    def render():
        yield (
            f"indexed {folder} -> {store} in {report.seconds:.1f}s: {report.added} added, {report.reused} reused, "
            f"{report.unchanged} unchanged, {report.pruned} pruned; {report.total} items in the store"
        )
        if report.videos:
            yield f"{report.videos} videos sampled: {report.frames} frames added"
        if report.missing:
            yield f"{report.missing} stored files are gone from the folder (run with --prune to forget them)"
        if report.bad:
            yield f"{len(report.bad)} files skipped:"
            yield from (f"  {item_id}: {reason}" for item_id, reason in report.bad)
        if caption_report is not None:
            yield (
                f"captions: {caption_report.added} encoded, {caption_report.unchanged} unchanged, "
                f"{caption_report.removed} removed; {caption_report.captions} captions in {store / 'text'}"
            )

    payload = asdict(report) | ({"captions": asdict(caption_report)} if caption_report else {})
    emit(payload, as_json, render)


# ---- search -------------------------------------------------------------------------------------------------
_SEARCH_EXAMPLES = """Examples:

  clipmath search -s photos.store --image dog.jpg --text "on a beach"

  clipmath search -s photos.store --image car.jpg --from "red" --to "blue" --lam 1.5

  clipmath search -s photos.store --expr '+king.jpg -"a man" +"a woman"' -k 5 --json
"""


@app.command(epilog=_SEARCH_EXAMPLES)
@with_query_controls
def search(
    controls: QueryControls,
    store: StoreOpt,
    image: Annotated[Optional[str], typer.Option("--image", "-i", help="Reference image file.")] = None,
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="Modification text.")] = None,
    source: Annotated[Optional[str], typer.Option("--from", help="SIMAT delta: source word/phrase.")] = None,
    target: Annotated[Optional[str], typer.Option("--to", help="SIMAT delta: target word/phrase.")] = None,
    lam: Annotated[float, typer.Option("--lam", help="SIMAT delta strength λ.")] = 1.0,
    expr: Annotated[Optional[str], typer.Option("--expr", "-e", help="Expression: '+a.jpg -b.jpg +\"text\"'.")] = None,
    method: Annotated[
        Optional[str],
        typer.Option(
            help="Compose method (see `clipmath methods`), or a variant setting its knobs: 'ldre[captions=5]'; "
            "inferred if omitted."
        ),
    ] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Trained weights for learned methods.")] = None,
    k: KOpt = 10,
    index_kind: IndexKindOpt = "exact",
    recall: scale.RecallOpt = None,
    half_kernel: scale.HalfKernelOpt = "auto",
    include_reference: Annotated[bool, typer.Option(help="Allow the reference image itself in the results.")] = False,
    since: sync.SinceOpt = None,
    until: sync.UntilOpt = None,
    caption: sync.CaptionFilterOpt = None,
    meta: sync.MetaFilterOpt = None,
    against: Annotated[
        str, typer.Option("--target", help="image: the image vectors; text: the captions' (index --captions).")
    ] = "image",
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a store with a composed query (image + text, image + from/to delta, or an expression)."""
    from clipmath.compose import build_query, infer_method
    from clipmath.retrieval import Retriever, RetrieverConfig

    if (source is None) != (target is None):
        raise ClipmathError("--from and --to go together")
    fields = {"reference": image, "text": text, "source": source, "target": target, "expression": expr}
    method = method or infer_method(**fields)
    query = build_query(**fields, lam=lam)
    set_threads(threads)
    config = RetrieverConfig(
        index=index_kind, faiss=scale.index_params(device, recall, half_kernel), exclude_reference=not include_reference
    )
    if against not in ("image", "text"):
        raise ClipmathError(f"--target is image or text, not {against!r}")
    if against == "text":
        from clipmath.store.captions import has_text_store, text_store

        if not has_text_store(store):
            raise ClipmathError(f"{store} holds no caption vectors (index it with --captions)")
        store = text_store(store)
    retriever = Retriever.open(store, model=model, device=device, config=config, dtype=dtype)
    why = (retriever.explain([query], method, checkpoint) or [None])[0]  # captions and rewrites (cirevl, ldre…)
    where = None
    if index_kind.startswith("milvus:"):  # the collection answers its own filters, before the query controls
        where = sync.milvus_filter(since, until, caption, meta)
        if getattr(retriever.index, "stale", False):
            status("note: the Milvus collection was synced at another state of the store: run clipmath sync", as_json)
    elif any((since, until, caption, meta)):
        raise ClipmathError("--since, --until, --caption and --meta are answered by a milvus:URI index")
    page = retriever.search_page(query, controls, method=method, k=k, checkpoint=checkpoint, where=where)
    hits, facts = page.hits, page_facts(page)
    scale.report_tuning(retriever.index, as_json)
    label, metas = retriever.encoder.info.label(), retriever.metadata()
    results = [
        {"rank": h.rank + 1, "id": h.id, "path": str(retriever.path_of(h.id)), "score": h.score,
         "photo": metas[h.id].as_dict() if h.id in metas else None} for h in hits
    ]  # fmt: skip
    payload = {"model": label, "method": method, "index": index_kind, **({"query": why} if why else {}),
               "results": results, **facts}  # fmt: skip
    rows = [(h.rank + 1, f"{h.score:.4f}", shown_id(h.id, metas.get(h.id)), describe(metas.get(h.id))) for h in hits]
    title = f"method {method} · model {label}" + (f" · {page_note(page)}" if facts else "")
    title += f" · query text: {why['rewrites'][0]!r}" if why else ""
    if not rows:  # an empty table says less than a sentence
        emit(payload, as_json, lambda: [title, "no results: no item passes the filters and the score cutoff"])
        return
    emit(payload, as_json, lambda: [table(("rank", "score", "id", "photo"), rows, title=title)])


# ---- info / methods / models --------------------------------------------------------------------------------
@app.command(epilog="Example:\n\n  clipmath info photos.store --json")
def info(store: StoreArg, as_json: JsonOpt = False) -> None:
    """Print a store's model, item count, dimension and size on disk."""
    from clipmath.store import Gallery
    from clipmath.store.photometa import summary as photo_summary

    with Gallery.open(store) as gallery:
        details = gallery.info()
        photos = photo_summary(gallery)
    rows = [
        ("store", details.path),
        ("model", details.model_id),
        ("backend", details.backend),
        ("dimension", details.dim),
        ("preprocessing", details.preprocessing),
        ("images", details.count),
        ("skipped files", details.bad_files),
        ("image root", details.root),
        ("size on disk", f"{details.size_bytes / 1e6:.2f} MB"),
        ("created", details.created),
        *summary_rows(photos),
    ]
    emit({**asdict(details), "photos": photos}, as_json, lambda: key_values(rows))


@app.command(epilog="Example:\n\n  clipmath methods --json")
def methods(as_json: JsonOpt = False) -> None:
    """List the compose methods: what each needs from a query, and which `clipmath train` command makes the
    checkpoint of a learned one."""
    from clipmath.compose import METHODS

    listing = {
        name: {
            "description": spec.description,
            "needs": list(spec.needs),
            "learned": spec.learned,
            "train_command": spec.train_command,
        }
        for name, spec in METHODS.items()
    }
    rows = [
        (
            name,
            " ".join(FIELD_FLAGS.get(need, need) for need in entry["needs"]),
            f"train {entry['train_command']}" if entry["learned"] else "-",
            entry["description"],
        )
        for name, entry in listing.items()
    ]
    columns = ("name", "query options", "checkpoint from", "description")
    emit(listing, as_json, lambda: [table(columns, rows, title="compose methods (--method)", left=columns)])


def _listing(registry) -> list[dict]:
    """Entries of a model registry (ENCODERS, LANGUAGE_MODELS) as rows: name, description, pretrained, aliases."""
    aliases: dict[str, list[str]] = {}
    for alias, name in registry.aliases().items():
        aliases.setdefault(name, []).append(alias)
    return [
        {
            "name": name + (f":{spec.arg_name.upper()}" if spec.arg_name else ""),
            "description": spec.description,
            "pretrained": spec.pretrained,
            "aliases": aliases.get(name, []),
        }
        for name, spec in registry.items()
    ]


_MODELS_EXAMPLES = """Examples:

  clipmath models

  clipmath models --known

  clipmath models --json
"""


@app.command(epilog=_MODELS_EXAMPLES)
def models(
    as_json: JsonOpt = False,
    known: Annotated[
        bool, typer.Option("--known", help="List notable checkpoints with their published zero-shot figures.")
    ] = False,
) -> None:
    """List the named encoders (--model), the model families and language models (--lm); a hub name or a local
    folder also works."""
    from clipmath.encoders.families import FAMILIES, known_models

    if known:
        _known_models(known_models(), as_json)
        return
    from clipmath.caption import LANGUAGE_MODELS
    from clipmath.encoders import ENCODERS

    listing = {
        "encoders": _listing(ENCODERS),
        "families": [asdict(f) for f in FAMILIES],
        "language_models": _listing(LANGUAGE_MODELS),
    }

    def render():
        for kind, option in (("encoders", "--model"), ("language_models", "--lm")):
            rows = [
                (
                    entry["name"],
                    "yes" if entry["pretrained"] else "random weights",
                    ", ".join(entry.get("aliases", [])),
                    entry["description"],
                )
                for entry in listing[kind]
            ]
            title = f"{kind.replace('_', ' ')} ({option})"
            columns = ("name", "pretrained", "aliases", "description")
            yield table(columns, rows, title=title, left=columns)
            if kind == "encoders":
                rows = [(f["name"], f["library"], f["accepts"]) for f in listing["families"]]
                columns = ("family", "library", "--model accepts")
                yield table(columns, rows, title="model families (--model)", left=columns)
        yield "Any other --model is a Hugging Face model name (a family above) or a local model folder;"
        yield "any other --lm a Hugging Face causal LM or a local folder. clipmath models --known: notable checkpoints."

    emit(listing, as_json, render)


def _known_models(data: dict, as_json: bool) -> None:
    def figure(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    def render():
        rows = [
            (
                m["name"], str(m["dim"]), str(m["input_size"]), m["licence"], figure(m["imagenet_zero_shot"]),
                figure(m["coco_text_to_image_r1"]), figure(m["coco_image_to_text_r1"]),
                "-" if m.get("gflops") is None else f"{m['gflops']:g}", m["source"], m.get("use", ""),
            )
            for m in data["models"]
        ]  # fmt: skip
        columns = ("model", "dim", "size", "licence", "IN-1k", "COCO t2i R@1", "COCO i2t R@1", "GFLOPs", "source",
                   "good for")  # fmt: skip
        title = "known models (published zero-shot figures, %)"
        yield table(columns, rows, title=title, left=(columns[0], *columns[-3:]))
        yield from (f"[{key}] {text}" for key, text in data["sources"].items())
        yield "Figures are the sources', not clipmath's measurements; docs/models.md explains how to pick one."

    emit(data, as_json, render)
