"""Training data readers: captioned images (for the SIMAT heads), CIR triplets (CLIP4Cir), image folders (SEARLE).

Captioned images come from

* a folder of images plus a captions file: JSON ``{"file.jpg": ["caption", ...]}`` (or one string per file), or
  TSV lines ``file.jpg<TAB>caption`` (a file may appear on several lines);
* the COCO captions layout: ``ROOT/annotations/captions_<split>.json`` with images in ``ROOT/<split>/``.

Triplets are anything iterable of ``(reference_path, caption, target_path)`` (:data:`TripletSource`), so benchmark
loaders (CIRR, FashionIQ) plug in directly; :func:`read_triplets` reads them from JSON, JSON lines or TSV.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clipmath.errors import DatasetError
from clipmath.paths import existing_folder
from clipmath.store.indexer import list_images

#: Any iterable of (reference image path, modification caption, target image path).
TripletSource = Iterable[tuple["str | Path", str, "str | Path"]]


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class Triplet:
    reference: Path
    caption: str
    target: Path


# ---- captioned images --------------------------------------------------------------------------------------------
def read_captions(images: str | Path, captions: str | Path) -> list[CaptionedImage]:
    """Images under ``images`` with their captions from a JSON or TSV ``captions`` file."""
    images, captions = existing_folder(images, error=DatasetError), Path(captions)
    text = _read(captions)
    table: dict[str, list[str]] = {}
    if captions.suffix.lower() == ".json":
        data = _json(text, captions)
        if not isinstance(data, dict):
            raise DatasetError(f'{captions}: expected a JSON object {{"file.jpg": ["caption", ...]}}')
        for name, value in data.items():
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise DatasetError(f"{captions}: captions of {name!r} must be a string or a list of strings")
            table.setdefault(str(name), []).extend(values)
    else:
        for number, row in enumerate(csv.reader(text.splitlines(), delimiter="\t"), start=1):
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise DatasetError(f"{captions} line {number}: expected 'file<TAB>caption'")
            table.setdefault(row[0].strip(), []).append("\t".join(row[1:]).strip())
    return _captioned(images, table, str(captions))


def read_coco_captions(
    path: str | Path, images: str | Path | None = None, split: str | None = None
) -> list[CaptionedImage]:
    """COCO captions: ``path`` is a ``captions_<split>.json`` file or a COCO root holding ``annotations/``."""
    path = Path(path)
    if path.is_dir():
        available = sorted((path / "annotations").glob("captions_*.json"))
        candidates = [c for c in available if not split or c.stem == f"captions_{split}"]
        if len(candidates) != 1:
            found = ", ".join(c.stem.removeprefix("captions_") for c in available) or "none"
            raise DatasetError(
                f"{path}: need exactly one annotations/captions_<split>.json (found: {found}); set 'coco_split'"
            )
        annotations, root = candidates[0], path
    else:
        annotations, root = path, path.parent.parent
    split = annotations.stem.removeprefix("captions_")
    folder = Path(images) if images else root / split
    data = _json(_read(annotations), annotations)
    try:
        names = {int(img["id"]): str(img["file_name"]) for img in data["images"]}
        table: dict[str, list[str]] = {}
        for item in data["annotations"]:
            table.setdefault(names[int(item["image_id"])], []).append(str(item["caption"]).strip())
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{annotations} is not a COCO captions file ({type(exc).__name__}: {exc})") from None
    if not folder.is_dir():
        raise DatasetError(f"COCO image folder not found: {folder} (set 'images')")
    return _captioned(folder, table, str(annotations))


def _captioned(images: Path, table: dict[str, list[str]], source: str) -> list[CaptionedImage]:
    items, missing = [], []
    for name in sorted(table):
        captions = tuple(c for c in table[name] if c.strip())
        path = images / name
        if not path.is_file():
            missing.append(name)
        elif captions:
            items.append(CaptionedImage(path, captions))
    if missing:
        raise DatasetError(f"{len(missing)} image(s) named in {source} are not in {images}, e.g. {missing[0]}")
    if not items:
        raise DatasetError(f"no captioned images in {source}")
    return items


# ---- triplets ------------------------------------------------------------------------------------------------------
def as_triplets(source: TripletSource, root: str | Path | None = None) -> list[Triplet]:
    """Materialise any ``(reference, caption, target)`` iterable; relative paths are taken under ``root``."""
    base = Path(root) if root else None
    out = []
    for number, item in enumerate(source):
        try:
            reference, caption, target = item
        except (TypeError, ValueError):
            raise DatasetError(f"triplet {number}: expected (reference, caption, target), got {item!r}") from None
        ref, tgt = Path(reference), Path(target)
        if base is not None:
            ref, tgt = (p if p.is_absolute() else base / p for p in (ref, tgt))
        if not str(caption).strip():
            raise DatasetError(f"triplet {number}: empty caption")
        out.append(Triplet(ref, str(caption).strip(), tgt))
    missing = [p for t in out for p in (t.reference, t.target) if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} triplet image(s) not found, e.g. {missing[0]}")
    if not out:
        raise DatasetError("no triplets")
    return out


def read_triplets(path: str | Path, images: str | Path | None = None) -> list[Triplet]:
    """Triplets from JSON (a list of ``{"reference", "caption", "target"}``), JSON lines, or TSV
    ``reference<TAB>caption<TAB>target``; image paths relative to ``images`` (default: the file's folder)."""
    path = Path(path)
    text = _read(path)
    root = Path(images) if images else path.parent
    rows: list[tuple[str, str, str]] = []
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        records = (
            _json(text, path)
            if suffix == ".json"
            else [_json(line, path) for line in text.splitlines() if line.strip()]
        )
        if not isinstance(records, list):
            raise DatasetError(f"{path}: expected a JSON list of {{reference, caption, target}} objects")
        for number, record in enumerate(records):
            try:
                rows.append((record["reference"], record["caption"], record["target"]))
            except (KeyError, TypeError):
                raise DatasetError(f"{path} item {number}: needs 'reference', 'caption' and 'target'") from None
    else:
        for number, row in enumerate(csv.reader(text.splitlines(), delimiter="\t"), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 3:
                raise DatasetError(f"{path} line {number}: expected 'reference<TAB>caption<TAB>target'")
            rows.append((row[0], row[1], row[2]))
    return as_triplets(rows, root)


# ---- image folders ------------------------------------------------------------------------------------------------
def image_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted)."""
    folder = existing_folder(folder, error=DatasetError)
    files = [folder / name for name in list_images(folder)]
    if not files:
        raise DatasetError(f"no images in {folder}")
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def _json(text: str, path: Path) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
