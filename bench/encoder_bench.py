"""Images/s and texts/s per model family: clipmath's whole path against the library's own reference loop, same run.

    python bench/encoder_bench.py                       # real sizes, random weights, this CPU
    python bench/encoder_bench.py --tiny --images 8     # a dry run with the tests' tiny models
    python bench/encoder_bench.py --device cuda         # on a GPU machine

Families (real architectures and sizes, random weights, nothing downloaded): OpenCLIP ViT-B-32 and MobileCLIP2-S0
(open_clip's bundled tokenizer), SigLIP base/16 and a fixed-resolution SigLIP 2 base/16 (transformers
``SiglipModel``) and Chinese-CLIP base/16 (transformers), the last three with a locally built vocabulary.

clipmath's path: ``encode_files`` on the photo files (decode + resize/crop in worker processes while the model runs)
and ``encode_texts``. The reference loop is what the library's documentation shows: open each file with PIL, the
library's own preprocessing (open_clip's transform; transformers' image processor), the model's encode function,
batch by batch, and its tokenizer + text encoder. Both use the same batch size and torch threads. Timings only:
random weights mean nothing for quality.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import clipmath  # noqa: E402, F401 - its torchvision guard must be in place before open_clip is imported
from clipmath.encoders.identity import RANDOM_MARKER  # noqa: E402

CAPTIONS = ["a photo of a cat", "Wooden spoons are lined up on a table", "an astronaut", "一只猫的照片"]


# ---- models -----------------------------------------------------------------------------------------------------
def open_clip_real(folder: Path, arch: str) -> Path:
    """An OpenCLIP hub-layout folder of ``arch`` at its real size, random weights."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}
    model = open_clip.create_model(arch)  # random weights; its preprocess_cfg is the architecture's default
    config["preprocess_cfg"] = dict(model.visual.preprocess_cfg)
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / RANDOM_MARKER).write_text("{}")
    return folder


def hf_real(folder: Path, family: str) -> Path:
    """A transformers folder of ``family`` at base/16 size (the configs' defaults), random weights."""
    import transformers as t

    from tests.model_families import CAPTIONS as TEST_CAPTIONS
    from tests.model_families import CJK_CAPTIONS, local_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if family in ("siglip", "siglip2"):
        tokenizer = local_tokenizer(TEST_CAPTIONS + CAPTIONS, family)
        vocab = 32000 if family == "siglip" else 256000  # SigLIP's sentencepiece, SigLIP 2's Gemma vocabulary
        model = t.SiglipModel(t.SiglipConfig(text_config={"vocab_size": vocab}))
        processor, tokenizer.model_max_length = t.SiglipImageProcessorPil(), 64
    else:
        tokenizer = local_tokenizer(CJK_CAPTIONS + TEST_CAPTIONS + CAPTIONS, "bert")
        model = t.ChineseCLIPModel(t.ChineseCLIPConfig(text_config={"vocab_size": 21128}))
        processor, tokenizer.model_max_length = t.ChineseCLIPImageProcessorPil(), 52
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / RANDOM_MARKER).write_text("{}")
    return folder


def build(name: str, work: Path, tiny: bool) -> Path:
    """The folder of family ``name`` (tiny: the tests' shrunk models)."""
    from tests import model_families

    kind, arch = name.split(":")
    if tiny:
        if kind == "open_clip":
            return model_families.open_clip_folder(work, "convnext" if "Mobile" in arch else "ViT-B-32")
        return model_families.hf_folder(work, arch)
    return open_clip_real(work / arch, arch) if kind == "open_clip" else hf_real(work / arch, arch)


FAMILIES = ("open_clip:ViT-B-32", "open_clip:MobileCLIP2-S0", "hf:siglip", "hf:siglip2", "hf:chinese_clip")


# ---- the library's own loops ------------------------------------------------------------------------------------
def reference(name: str, folder: Path, device: str) -> tuple[Callable, Callable]:
    """(encode images of paths, encode texts) as the library's own documentation does it."""
    if name.startswith("open_clip"):
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        model.eval()

        def images(paths):
            batch = torch.stack([preprocess(Image.open(p)) for p in paths]).to(device)
            return model.encode_image(batch, normalize=True)

        def texts(captions):
            return model.encode_text(tokenizer(captions).to(device), normalize=True)

        return images, texts
    import transformers as t

    model = t.AutoModel.from_pretrained(folder).to(device).eval()
    processor = t.AutoImageProcessor.from_pretrained(folder, backend="pil")
    tokenizer = t.AutoTokenizer.from_pretrained(folder)
    padding = "max_length" if "siglip" in name else True

    def hf_images(paths):
        pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
        out = model.get_image_features(pixel_values=pixels.to(device))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def hf_texts(captions):
        tokens = tokenizer(captions, padding=padding, truncation=True, max_length=tokenizer.model_max_length,
                           return_tensors="pt").to(device)  # fmt: skip
        out = model.get_text_features(input_ids=tokens["input_ids"]) if padding == "max_length" else \
            model.get_text_features(**tokens)  # fmt: skip
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    return hf_images, hf_texts


# ---- timing -----------------------------------------------------------------------------------------------------
def rate(count: int, run: Callable[[], object], repeats: int) -> float:
    """Median items/s over ``repeats`` runs (after one warm-up)."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return count / statistics.median(times)


def bench_family(name: str, folder: Path, photos: list[Path], texts: list[str], args) -> dict:
    from clipmath.encoders import load_encoder

    encoder = load_encoder(str(folder), device=args.device)
    ref_images, ref_texts = reference(name, folder, args.device)
    batch = args.batch_size

    def ours_images():
        return encoder.encode_files(photos, batch_size=batch, workers=args.workers)

    def library_images():
        with torch.no_grad():
            for start in range(0, len(photos), batch):
                ref_images(photos[start : start + batch]).cpu()

    def library_texts():
        with torch.no_grad():
            for start in range(0, len(texts), 256):
                ref_texts(texts[start : start + 256]).cpu()

    row = {"family": name, "model": encoder.info.label(), "fast pipeline": encoder.pipeline_spec() is not None}
    row["images/s clipmath"] = rate(len(photos), ours_images, args.repeats)
    row["images/s library"] = rate(len(photos), library_images, args.repeats)
    row["texts/s clipmath"] = rate(len(texts), lambda: encoder.encode_texts(texts), args.repeats)
    row["texts/s library"] = rate(len(texts), library_texts, args.repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models (a dry run)")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--images", type=int, default=64, help="photos per run (examples/gallery, repeated)")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="clipmath's image workers (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    gallery = sorted(p for p in (REPO / "examples" / "gallery").rglob("*") if p.suffix in (".jpg", ".png"))
    photos = [gallery[i % len(gallery)] for i in range(args.images)]
    texts = [f"{CAPTIONS[i % len(CAPTIONS)]} {i}" for i in range(args.texts)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="clipmath-encoder-bench-") as work:
        for name in args.families:
            folder = build(name, Path(work) / name.replace(":", "-"), args.tiny)
            rows.append(bench_family(name, folder, photos, texts, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.images} photos, {args.texts} texts, median of {args.repeats} "
          "(RANDOM WEIGHTS: timing only)\n")  # fmt: skip
    print("| family | images/s clipmath | images/s library | × | texts/s clipmath | texts/s library | × |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        image_ratio = r["images/s clipmath"] / r["images/s library"]
        text_ratio = r["texts/s clipmath"] / r["texts/s library"]
        print(f"| {r['family']} | {r['images/s clipmath']:.1f} | {r['images/s library']:.1f} | {image_ratio:.2f} | "
              f"{r['texts/s clipmath']:.0f} | {r['texts/s library']:.0f} | {text_ratio:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
