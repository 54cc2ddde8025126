"""Run every CUDA path end to end on real-size random models; print path | result | throughput | peak memory.

    python bench/gpu_check.py                      # on a GPU machine: ViT-B/32 CLIP + GPT-2 medium, --device cuda
    python bench/gpu_check.py --tiny --device cpu  # dry run anywhere: tiny models, a few images, the same paths

Nothing is downloaded: the CLIP model is built from ``CLIPConfig()`` (ViT-B/32's sizes) and GPT-2 medium from a
``GPT2Config`` with random weights and byte-level tokenizers, saved to a temporary folder. The numbers are timing
only: a random model's results mean nothing. Paths: encode (encode_files, and the model alone), ``clipmath index``,
``search``, ``eval`` (a toy CIRR), every ``train`` command, ``caption``, the server's ``/api/search``, and encoding
with each model family of ``bench/encoder_bench.py`` (OpenCLIP, SigLIP, SigLIP 2, Chinese-CLIP). Each row
says ok or the one-line error; peak memory is torch's CUDA peak on a GPU, the process's peak RSS on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]


@dataclass
class Context:
    device: str
    dtype: str
    tiny: bool
    work: Path
    clip: Path = Path()
    lm: Path = Path()
    photos: list[Path] = field(default_factory=list)
    data: Path = Path()
    store: Path = Path()
    cirr: Path = Path()


@dataclass
class Row:
    path: str
    result: str
    throughput: str
    peak: str


# ---- models and data --------------------------------------------------------------------------------------------
def build_clip(folder: Path, tiny: bool) -> Path:
    """ViT-B/32-sized random CLIP (``CLIPConfig()`` defaults) with a byte-level tokenizer; tiny: the test model."""
    if tiny:
        from clipmath.encoders.tiny import tiny_clip_folder

        return tiny_clip_folder()
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from clipmath.encoders.identity import RANDOM_MARKER
    from clipmath.encoders.tiny import byte_vocab

    folder.mkdir(parents=True, exist_ok=True)
    vocab = byte_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    ids = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]}
    config = CLIPConfig(text_config={**ids, "pad_token_id": vocab["<|endoftext|>"]})
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    (folder / RANDOM_MARKER).write_text(json.dumps({"note": "random ViT-B/32-sized CLIP for gpu_check"}))
    return folder


def build_lm(folder: Path, tiny: bool) -> Path:
    """GPT-2 medium-sized random LM (24 layers, 1024 wide, 16 heads) with the tiny LM's byte-level tokenizer."""
    from clipmath.caption.language_models import RANDOM_LM_MARKER, tiny_lm_folder

    small = tiny_lm_folder()
    if tiny:
        return small
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(small))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    end = tokenizer.eos_token_id
    config = GPT2Config(n_embd=1024, n_layer=24, n_head=16, bos_token_id=end, eos_token_id=end)
    GPT2LMHeadModel(config).save_pretrained(folder)
    (folder / RANDOM_LM_MARKER).write_text(json.dumps({"note": "random GPT-2 medium-sized LM for gpu_check"}))
    return folder


def build_data(ctx: Context) -> None:
    from bench.index_bench import make_photos
    from clipmath.train.synthetic import make_shapes_dataset
    from tests.benchmark_folders import build_cirr

    ctx.photos = make_photos(ctx.work / "photos", 24 if ctx.tiny else 512)
    root = ctx.work / "train"
    shapes = make_shapes_dataset(root / "images", shapes=3, colours=3, instances=2 if ctx.tiny else 8, size=64)
    rows = [{"reference": t.reference.name, "caption": t.caption, "target": t.target.name} for t in shapes.triplets()]
    (root / "triplets.json").write_text(json.dumps(rows))
    lines = [f"{item.path.name}\t{c}" for item in shapes.captioned() for c in item.captions]
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")
    ctx.data = root
    ctx.cirr = build_cirr(ctx.work / "cirr")


# ---- the paths --------------------------------------------------------------------------------------------------
def cli(*args: str) -> dict:
    """Run a clipmath command in this process; its JSON output, or a one-line error."""
    from typer.testing import CliRunner

    from clipmath.cli import app

    result = CliRunner().invoke(app, [*args, "--json"])
    if result.exit_code != 0:
        lines = [line for line in (result.output or "").splitlines() if line.strip()]
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            lines.append(f"{type(result.exception).__name__}: {result.exception}")
        raise RuntimeError(lines[-1] if lines else f"exit code {result.exit_code}")
    text = result.stdout.strip()
    return json.loads(text[text.index("{") if "{" in text else 0 :]) if text else {}


def model_args(ctx: Context, dtype: bool = True) -> list[str]:
    return ["--model", str(ctx.clip), "--device", ctx.device, *(["--dtype", ctx.dtype] if dtype else [])]


def check_encode(ctx: Context) -> str:
    from clipmath.encoders import load_encoder

    encoder = load_encoder(str(ctx.clip), device=ctx.device, **_dtype_kwargs(load_encoder, ctx.dtype))
    batch = 256 if not ctx.tiny else 8
    encoder.encode_files(ctx.photos[:batch], batch_size=batch)  # warm-up (and worker start)
    started = time.perf_counter()
    encoded = encoder.encode_files(ctx.photos, batch_size=batch)
    _sync(ctx)
    rate = len(encoded.indices) / (time.perf_counter() - started)
    import torch

    pixels = encoder.pixels_from_uint8(__import__("numpy").zeros((batch, *encoder.pipeline_spec().crop, 3), "uint8"))
    with torch.no_grad():
        encoder.image_features(pixels)
        _sync(ctx)
        started = time.perf_counter()
        for _ in range(5):
            encoder.image_features(pixels)
        _sync(ctx)
    model_rate = 5 * batch / (time.perf_counter() - started)
    return f"{rate:,.0f} img/s files→vectors; model alone {model_rate:,.0f} img/s ({encoder.dtype})"


def check_index(ctx: Context) -> str:
    ctx.store = ctx.work / "store"
    started = time.perf_counter()
    report = cli("index", str(ctx.work / "photos"), "--store", str(ctx.store), *model_args(ctx), "--batch-size", "256")
    return f"{report.get('added', 0) / (time.perf_counter() - started):,.0f} img/s (whole command, {report.get('added')})"


def check_search(ctx: Context) -> str:
    started = time.perf_counter()
    cli("search", "--store", str(ctx.store), "--text", "a red circle", "-k", "10", *model_args(ctx, dtype=False))
    return f"{time.perf_counter() - started:.2f} s per command"


def check_eval(ctx: Context) -> str:
    started = time.perf_counter()
    cli("eval", "--dataset", "cirr", "--path", str(ctx.cirr), "--limit", "20", *model_args(ctx))
    return f"{time.perf_counter() - started:.1f} s (toy CIRR, 20 queries)"


def _train(ctx: Context, name: str, *args: str) -> str:
    started = time.perf_counter()
    report = cli("train", name, "--output", str(ctx.work / "runs" / name), "--quiet", *model_args(ctx), *args)
    rate = _find(report, "per_second")
    seconds = time.perf_counter() - started
    return f"{rate:,.0f} examples/s" if rate else f"{seconds:.1f} s"


def check_train_adapter(ctx: Context) -> str:
    data = ctx.data
    return _train(ctx, "adapter", "--images", str(data / "images"), "--captions", str(data / "captions.tsv"),
                  "--epochs", "2")  # fmt: skip


def check_train_combiner(ctx: Context) -> str:
    return _train(ctx, "combiner", "--triplets", str(ctx.data / "triplets.json"), "--images",
                  str(ctx.data / "images"), "--epochs", "2")  # fmt: skip


def check_train_finetune(ctx: Context) -> str:
    return _train(ctx, "finetune", "--triplets", str(ctx.data / "triplets.json"), "--images",
                  str(ctx.data / "images"), "--epochs", "1", "--batch-size", "16")  # fmt: skip


def check_train_oti(ctx: Context) -> str:
    return _train(ctx, "oti", "--images", str(ctx.data / "images"), "--steps", "3", "--top-k", "2")


def check_train_phi(ctx: Context) -> str:
    return _train(ctx, "phi", "--oti", str(ctx.work / "runs" / "oti"), "--epochs", "1", "--top-k", "2")


def check_caption(ctx: Context) -> str:
    started = time.perf_counter()
    report = cli("caption", "--image", str(ctx.photos[0]), "--lm", str(ctx.lm), "--beam-size", "2",
                 "--max-length", "6", "--num-iterations", "1", *model_args(ctx))  # fmt: skip
    caption = str(_find(report, "caption") or "")[:30]
    return f"{time.perf_counter() - started:.1f} s for one caption ({caption!r})"


def check_serve(ctx: Context) -> str:
    from fastapi.testclient import TestClient

    from clipmath.encoders import load_encoder
    from clipmath.retrieval import Retriever
    from clipmath.serve import create_app
    from clipmath.store import Gallery

    encoder = load_encoder(str(ctx.clip), device=ctx.device, **_dtype_kwargs(load_encoder, ctx.dtype))
    with TestClient(create_app(Retriever(Gallery.open(ctx.store), encoder)), base_url="http://127.0.0.1") as client:
        client.post("/api/search", json={"text": "warm-up", "k": 5}).raise_for_status()
        started = time.perf_counter()
        for i in range(20):
            client.post("/api/search", json={"text": f"a photo number {i}", "k": 10}).raise_for_status()
    return f"{20 / (time.perf_counter() - started):,.1f} text queries/s (server worker thread)"


def check_family(name: str) -> Callable[[Context], str]:
    """Encode the photos and a few texts with family ``name`` of ``bench/encoder_bench.py`` (real size; tiny:
    the tests' shrunk model) on the device."""

    def check(ctx: Context) -> str:
        from bench.encoder_bench import build
        from clipmath.encoders import load_encoder

        folder = build(name, ctx.work / "families" / name.replace(":", "-"), ctx.tiny)
        encoder = load_encoder(str(folder), device=ctx.device, **_dtype_kwargs(load_encoder, ctx.dtype))
        encoder.encode_files(ctx.photos[:8], batch_size=8)  # warm-up
        started = time.perf_counter()
        encoded = encoder.encode_files(ctx.photos, batch_size=64)
        _sync(ctx)
        rate = len(encoded.indices) / (time.perf_counter() - started)
        vectors = encoder.encode_texts(["a photo of a cat"] * 64)
        assert vectors.shape == (64, encoder.dim) and len(encoded.indices) == len(ctx.photos)
        return f"{rate:,.0f} img/s files→vectors ({encoder.info.backend}, {encoder.dim}-d, {encoder.dtype})"

    return check


def _family_checks() -> list[tuple[str, Callable[[Context], str]]]:
    from bench.encoder_bench import FAMILIES

    return [(f"encode {name}", check_family(name)) for name in FAMILIES]


CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("encode", check_encode),
    ("index", check_index),
    ("search", check_search),
    ("eval", check_eval),
    ("train adapter", check_train_adapter),
    ("train combiner", check_train_combiner),
    ("train finetune", check_train_finetune),
    ("train oti", check_train_oti),
    ("train phi", check_train_phi),
    ("caption", check_caption),
    ("serve", check_serve),
    *_family_checks(),  # OpenCLIP, SigLIP, SigLIP 2, Chinese-CLIP (open_clip ones fail in one line without it)
]


# ---- helpers ----------------------------------------------------------------------------------------------------
def _dtype_kwargs(load: Callable, dtype: str) -> dict:
    import inspect

    parameters = inspect.signature(load).parameters
    if "dtype" in parameters:
        return {"dtype": dtype}
    return {"fp16": dtype in ("auto", "float16")} if "fp16" in parameters else {}


def _find(report, key: str):
    """The first value whose key contains ``key`` anywhere in a JSON report."""
    if isinstance(report, dict):
        for name, value in report.items():
            if key in name and not isinstance(value, (dict, list)):
                return value
        values = report.values()
    elif isinstance(report, list):
        values = report
    else:
        return None
    for value in values:
        found = _find(value, key)
        if found is not None:
            return found
    return None


def _sync(ctx: Context) -> None:
    if ctx.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _reset_peak(ctx: Context) -> None:
    if ctx.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(ctx: Context) -> str:
    if ctx.device.startswith("cuda"):
        import torch

        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (CUDA)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS so far)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data (a dry run of the same paths)")
    parser.add_argument("--only", nargs="*", help="run only these paths")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    ctx = Context(args.device, args.dtype, args.tiny, Path(tempfile.mkdtemp(prefix="clipmath-gpu-check-")))
    try:
        import torch

        if args.device.startswith("cuda"):
            print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
        started = time.perf_counter()
        ctx.clip, ctx.lm = build_clip(ctx.work / "clip", args.tiny), build_lm(ctx.work / "lm", args.tiny)
        build_data(ctx)
        kind = "tiny test models" if args.tiny else "ViT-B/32-sized CLIP, GPT-2-medium-sized LM"
        print(f"models: {kind} (RANDOM WEIGHTS: timing only); set-up {time.perf_counter() - started:.0f} s", flush=True)
        rows = []
        for name, check in CHECKS:
            if args.only and name not in args.only:
                continue
            _reset_peak(ctx)
            try:
                throughput, result = check(ctx), "ok"
            except Exception as exc:  # noqa: BLE001 - every failure is a row of the table
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                throughput, result = "", f"FAIL: {type(exc).__name__}: {first[:160]}"
                if "-v" in sys.argv:
                    traceback.print_exc()
            rows.append(Row(name, result, throughput, _peak(ctx)))
            print(f"{name}: {result} {throughput}", flush=True)
        print(f"\ndevice {args.device}, dtype {args.dtype}\n")
        print("| path | result | throughput | peak memory |\n| --- | --- | --- | --- |")
        for row in rows:
            print(f"| {row.path} | {row.result} | {row.throughput} | {row.peak} |")
    finally:
        if not args.keep:
            shutil.rmtree(ctx.work, ignore_errors=True)


if __name__ == "__main__":
    main()
