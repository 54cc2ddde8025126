"""Build a folder holding every hostile kind of file the indexer must survive, index it, and print what happened.

Each entry is made on the spot (nothing downloaded): broken and disguised images, a decompression bomb, special
files (named pipe, device, socket), symlinks that leave the folder or loop, names that are not UTF-8 or hold a
newline, a sideways phone photo, odd pixel formats, an image the model embeds to NaN (a simulated model fault). The
indexer runs with the ``tiny-random-clip`` model (random weights: this checks plumbing, not quality) on a thread
with a time limit, so a hang shows as a failure. Prints a Markdown table: file | outcome | reason.

A second table tries hostile store paths and damaged stores: a store path that is a file, ``/proc/self``, a folder
that is not a store, a place that cannot be created; a merge of a damaged shard (refused, and with
``verified_only``), a repair after one flipped byte.

    python bench/hostile_folder.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import struct
import sys
import tempfile
import unicodedata
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TIME_LIMIT = 120.0


def _jpeg(size=(64, 48), color=(180, 40, 40), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width × height`` pixels (the data is a few bytes of zeros)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg((80, 40), exif=exif.tobytes())


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build(root: Path, outside: Path) -> dict[str, str]:
    """Create the hostile folder; returns ``{name as shown: what it is}``."""
    made: dict[str, str] = {}

    def put(name: str | bytes, data: bytes, what: str) -> None:
        path = os.path.join(os.fsencode(root), os.fsencode(name))
        with open(path, "wb") as fh:
            fh.write(data)
        made[_shown(os.fsdecode(name))] = what

    def special(name: str, what: str, make: Callable[[Path], None]) -> None:
        make(root / name)
        made[_shown(name)] = what

    good = _jpeg()
    put("good.jpg", good, "an ordinary JPEG (control)")
    put("empty.jpg", b"", "zero bytes")
    put("truncated.jpg", _jpeg((256, 256))[:600], "JPEG cut short")
    put("text.png", b"just some text, not an image\n" * 5, "text with an image suffix")
    put("script.jpg", b"<html><script>alert(1)</script></html>", "HTML with an image suffix")
    put("disguised.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "EPS (would run Ghostscript)")
    put("document.png", b"%PDF-1.4\n1 0 obj<<>>endobj\n", "PDF with an image suffix")
    put("bomb.png", _png_bomb(100_000, 100_000), "PNG header claiming 10 Gpixel (decompression bomb)")
    put("wide.png", _png_bomb(200_000, 1), "PNG 200000x1, header only (corrupt data)")
    put("wrong-suffix.jpg", _save(Image.new("RGB", (30, 30), "teal"), "PNG"), "a PNG named .jpg")
    put("UPPER.JPG", good, "upper-case suffix")
    put("phone.jpg", _exif_jpeg(6), "EXIF orientation 6 (stored 80x40, shown 40x80)")
    bad_exif = bytearray(_exif_jpeg(6))
    at = bad_exif.find(b"Exif\x00\x00")
    bad_exif[at + 6 : at + 14] = b"XXXXXXXX"
    put("bad-exif.jpg", bytes(bad_exif), "damaged EXIF block")
    frames = [Image.new("P", (20, 20), i) for i in range(3)]
    put("animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:]), "animated GIF")
    put("deep.png", _save(Image.new("I;16", (20, 20), 4000), "PNG"), "16-bit greyscale PNG")
    put("cmyk.jpg", _save(Image.new("CMYK", (20, 20), (0, 128, 128, 0)), "JPEG"), "CMYK JPEG")
    put("alpha.png", _save(Image.new("LA", (20, 20), (100, 0)), "PNG"), "grey + transparent alpha")
    put("photo.webp", _save(Image.new("RGB", (20, 20), "navy"), "WEBP"), "WebP")
    put("photo.tiff", _save(Image.new("RGB", (20, 20), "olive"), "TIFF"), "TIFF")
    put("photo.bmp", _save(Image.new("RGB", (20, 20), "pink"), "BMP"), "BMP")
    put(b"caf\xe9-\xff.jpg", good, "name not valid UTF-8 (Latin-1 bytes)")
    put("new\nline.jpg", good, "name with a newline")
    put("ｆｕｌｌ\u200bwidth\u202e.jpg", good, "full-width, zero-width and right-to-left characters")
    put("x" * 250 + ".jpg", good, "255-byte name")
    put(".hidden.jpg", good, "hidden file")
    put("unreadable.jpg", good, "permissions 000" + (" (running as root: readable anyway)" if os.geteuid() == 0 else ""))
    os.chmod(root / "unreadable.jpg", 0)
    special("fifo.jpg", "named pipe (a reader blocks forever)", lambda p: os.mkfifo(p))
    special("device.png", "symlink to /dev/zero (endless)", lambda p: os.symlink("/dev/zero", p))
    sock = socket.socket(socket.AF_UNIX)
    special("socket.jpg", "Unix socket", lambda p: sock.bind(str(p)))
    special("dangling.jpg", "symlink to nothing", lambda p: os.symlink(root / "nowhere.jpg", p))
    (outside / "secret.jpg").write_bytes(good)
    special("escape.jpg", "symlink to a file outside the folder", lambda p: os.symlink(outside / "secret.jpg", p))
    special("escape-dir", "symlink to a folder outside", lambda p: os.symlink(outside, p))
    special("loop", "symlink to the folder itself (a loop)", lambda p: os.symlink(root, p))
    special("folder.jpg", "a directory named .jpg", lambda p: p.mkdir())
    special("inside-link.jpg", "symlink to good.jpg (inside)", lambda p: os.symlink(root / "good.jpg", p))
    put("nan-model.png", _save(Image.new("RGB", (13, 13), "gold"), "PNG"), "an image the model embeds to NaN")
    made["_socket"] = sock  # type: ignore[assignment]
    return made


def _shown(name: str) -> str:
    """A name as the table shows it: undecodable bytes, control and invisible characters as escapes."""
    shown = "".join(
        c if c.isprintable() and unicodedata.category(c) not in ("Cf", "Cs") else f"\\u{ord(c):04x}" for c in name
    )
    return shown if len(shown) <= 60 else shown[:57] + "..."


class NaNForMarker:
    """The tiny model, except that a 13x13 image embeds to NaN (a model fault the store must never take in)."""

    def __init__(self, encoder) -> None:
        self.encoder, self.info, self.transform = encoder, encoder.info, encoder.transform

    def encode_images(self, images, batch_size: int = 32):
        vectors = self.encoder.encode_images(images, batch_size=batch_size)
        for i, image in enumerate(images):
            if image.size == (13, 13):
                vectors[i] = float("nan")
        return vectors


def run(keep: Path | None) -> list[tuple[str, str, str]]:
    from clipmath.encoders import load_encoder
    from clipmath.store import Gallery, IndexConfig, index_folder

    base = Path(keep or tempfile.mkdtemp(prefix="hostile-"))
    root, outside = base / "images", base / "outside"
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(exist_ok=True)
    made = build(root, outside)
    sock = made.pop("_socket")
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(
            index_folder(
                base / "store", root, NaNForMarker(load_encoder("tiny-random-clip")), IndexConfig(), progress=False
            )
        ),
        daemon=True,
    )
    worker.start()
    worker.join(TIME_LIMIT)
    sock.close()
    if worker.is_alive():
        raise SystemExit(f"indexing did not finish in {TIME_LIMIT:.0f} s: something hangs")
    report = result[0]
    gallery = Gallery.open(base / "store")
    indexed = {_shown(item): gallery.record(item) for item in gallery.snapshot().ids}
    skipped = {_shown(item): reason for item, reason in report.bad}
    rows = []
    for name, what in made.items():
        if name in indexed:
            record = indexed[name]
            rows.append((name, f"indexed {record.width}x{record.height}", what))
        elif name in skipped:
            rows.append((name, "skipped", f"{what}: {skipped[name]}"))
        else:
            inside = sorted(i for i in indexed if i.startswith(name + "/"))
            outcome = f"walked: {', '.join(inside)}" if inside else "not listed"
            rows.append((name, outcome, what))
    assert report.skipped == gallery.info().bad_files, "the run and the store disagree on the skipped count"
    rows.append(("(total)", f"{report.added} indexed, {report.skipped} skipped", f"store says {gallery.info().bad_files} skipped"))
    os.chmod(root / "unreadable.jpg", 0o644)
    return rows


def store_cases(base: Path) -> list[tuple[str, str]]:
    """Hostile store paths and damaged stores: ``(case, outcome)``."""
    from clipmath.encoders import load_encoder
    from clipmath.errors import ClipmathError
    from clipmath.store import IndexConfig, check, index_folder, repair
    from clipmath.store.merge import merge_stores

    encoder = load_encoder("tiny-random-clip")
    images = base / "few"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.new("RGB", (16 + i, 16), (30 * i, 90, 200)).save(images / f"p{i}.png")
    (base / "a-file").write_text("x")
    (base / "mine").mkdir(exist_ok=True)
    (base / "mine" / "notes.txt").write_text("x")

    def outcome(call) -> str:
        try:
            return f"ok: {call()}"
        except ClipmathError as exc:
            return f"refused: {exc}"

    rows = []
    for label, store in (("a file", base / "a-file"), ("/proc/self", Path("/proc/self")),
                         ("a folder that is not a store", base / "mine"),
                         ("a place that cannot be created", Path("/sys/hostile.store"))):  # fmt: skip
        rows.append((f"index --store on {label}", outcome(lambda s=store: index_folder(s, images, encoder, progress=False))))
    shard = base / "shard"
    index_folder(shard, images, encoder, IndexConfig(commit_every=2), progress=False)
    vectors = next(shard.glob("vectors-*"))
    with open(vectors, "r+b") as fh:
        fh.seek(vectors.stat().st_size // 2)
        fh.write(b"\xff\xfe")
    rows.append(("merge of a shard with one flipped byte", outcome(lambda: merge_stores([shard], base / "m1", progress=False))))
    verified = merge_stores([shard], base / "m2", progress=False, verified_only=True)
    rows.append(("... with verified_only", f"ok: {verified.added} merged, left out: {', '.join(verified.unverified)}"))
    fixed = repair(shard)
    rows.append(("repair of that shard (8 items, commits of 2)",
                 f"kept {fixed.kept_items}, dropped {', '.join(fixed.dropped_items)} ({fixed.dropped_rows} rows); "
                 f"check after: {'ok' if check(shard).ok else 'DAMAGED'}"))  # fmt: skip
    rows.append(("merge into a file", outcome(lambda: merge_stores([shard], base / "a-file", progress=False))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the folder here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    rows = run(args.keep)
    print("model: tiny-random-clip (random weights: plumbing only)\n")
    print("| file | outcome | reason |")
    print("|---|---|---|")
    for name, outcome, reason in rows:
        print(f"| `{name}` | {outcome} | {reason} |")
    print("\n| store case | outcome |")
    print("|---|---|")
    base = Path(tempfile.mkdtemp(prefix="hostile-stores-"))
    for case, outcome in store_cases(base):
        print(f"| {case} | {outcome.replace(str(base), 'TMP')} |")


if __name__ == "__main__":
    main()
