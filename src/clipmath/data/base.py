"""Shared records for the composed-image-retrieval (CIR) benchmarks and the helpers every loader uses.

A loader turns a benchmark folder, laid out exactly as its official release ships it, into a :class:`CIRDataset`:
the queries (:class:`CIRQuery`), the gallery to rank (ids in a fixed order) and where each image lives. All ids
are strings (CIRCO's integer COCO ids included); submissions convert back where a server wants integers.

Nothing here knows about models: turning queries into vectors is the job of ``compose/``; ranking and metrics
live in ``eval/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipmath.errors import DatasetError


@dataclass(frozen=True)
class CIRQuery:
    """One composed query: a reference image plus a relative caption.

    ``target_ids``: the ground-truth gallery ids (one for FashionIQ and CIRR; CIRCO's ``gt_img_ids`` with the
    annotated target first); empty on test splits, whose answers only the evaluation servers know.
    ``subset_ids``: CIRR's ``img_set`` members (the reference included, as in the file); ``None`` elsewhere.
    ``extra``: the benchmark's other fields (FashionIQ's two captions, CIRR's ``pairid``, CIRCO's
    ``shared_concept``...), documented by each loader.
    """

    query_id: str
    reference_id: str
    caption: str
    target_ids: tuple[str, ...] = ()
    subset_ids: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class ImageCollection:
    """Methods shared by every dataset: its ``gallery_ids`` (fixed order), ``image_paths`` and ``root``."""

    name: str
    split: str
    root: Path
    gallery_ids: list[str]
    image_paths: dict[str, Path]

    @cached_property
    def gallery_row(self) -> dict[str, int]:
        """Gallery id -> its row in :attr:`gallery_ids` (the order rankings break ties by)."""
        return {image_id: row for row, image_id in enumerate(self.gallery_ids)}

    def image_path(self, image_id: str) -> Path:
        """The file holding image ``image_id``."""
        try:
            return self.image_paths[image_id]
        except KeyError:
            raise DatasetError(f"image '{image_id}' is not part of {self.name} {self.split}") from None

    def missing_images(self, progress: bool = False) -> list[str]:
        """Gallery ids whose image file does not exist (stats every file)."""
        ids = tqdm(self.gallery_ids, desc=f"checking {self.name} images", disable=not progress, unit="img")
        return [image_id for image_id in ids if not self.image_paths[image_id].is_file()]

    def check_images(self, progress: bool | None = None) -> None:
        """Raise :class:`DatasetError` naming the first missing image file, if any (progress bar: large galleries)."""
        missing = self.missing_images(len(self.gallery_ids) > 20_000 if progress is None else progress)
        if missing:
            first = self.image_paths[missing[0]]
            shown = first.relative_to(self.root) if first.is_relative_to(self.root) else first
            raise DatasetError(
                f"{self.name}: {len(missing)} of {len(self.gallery_ids)} gallery images are missing "
                f"under {self.root}, e.g. {shown}; download the images into the official layout"
            )


@dataclass
class CIRDataset(ImageCollection):
    """A benchmark split ready to evaluate: queries, the gallery they are ranked against, and image paths.

    ``benchmark`` is ``fashioniq``, ``cirr`` or ``circo``; ``name`` adds the category for FashionIQ
    (``fashioniq-dress``). ``exclude_reference``: whether each query's reference image is removed from its ranking
    (CIRR and CIRCO: yes; FashionIQ: no, as SEARLE and CLIP4Cir evaluate it).
    """

    benchmark: str
    name: str
    split: str
    root: Path
    queries: list[CIRQuery]
    gallery_ids: list[str]
    image_paths: dict[str, Path]
    exclude_reference: bool

    @property
    def has_targets(self) -> bool:
        """True on validation splits (ground truth known), False on test splits."""
        return any(query.target_ids for query in self.queries)

    def __len__(self) -> int:
        return len(self.queries)


# ---- helpers shared by the loaders ---------------------------------------------------------------------------
def build_cir_dataset(
    *, benchmark: str, name: str, split: str, root: Path, queries: list[CIRQuery], image_paths: dict[str, Path],
    listing: Path, exclude_reference: bool, check_images: bool, target_role: str = "target",
) -> CIRDataset:  # fmt: skip
    """A loader's last step: every query's reference and target ids must be images of ``listing`` (the gallery,
    in ``image_paths`` order), then the dataset, its image files stat'ed if ``check_images``."""
    check_known_ids(((q.query_id, "reference", q.reference_id) for q in queries), image_paths, listing)
    check_known_ids(((q.query_id, target_role, t) for q in queries for t in q.target_ids), image_paths, listing)
    dataset = CIRDataset(benchmark, name, split, root, queries, list(image_paths), image_paths, exclude_reference)
    if check_images:
        dataset.check_images()
    return dataset


def require_file(root: Path, relative: str, benchmark: str, layout: str) -> Path:
    """``root / relative`` if it is a file, else a one-line :class:`DatasetError` naming it and the layout."""
    path = root / relative
    if not path.is_file():
        if not root.is_dir():
            raise DatasetError(f"{benchmark} folder {root} does not exist; expected layout: {layout}")
        raise DatasetError(f"{benchmark} folder {root} is incomplete: missing {relative} (expected layout: {layout})")
    return path


def require_dir(root: Path, relative: str, benchmark: str, layout: str) -> Path:
    """``root / relative`` if it is a directory, else a :class:`DatasetError` naming it and the layout."""
    path = root / relative
    if not path.is_dir():
        raise DatasetError(
            f"{benchmark} folder {root} is incomplete: missing folder {relative}/ (expected layout: {layout})"
        )
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON annotation file, turning syntax errors into :class:`DatasetError`."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}); re-download the official file"
        ) from None


def field_of(entry: Mapping[str, Any], key: str, path: Path, position: int) -> Any:
    """``entry[key]``, or a :class:`DatasetError` saying which entry of which file lacks it."""
    if not isinstance(entry, Mapping):
        raise DatasetError(f"{path}: entry {position} is a {type(entry).__name__}, expected an object")
    try:
        return entry[key]
    except KeyError:
        raise DatasetError(f"{path}: entry {position} has no '{key}' field; is this the official file?") from None


def expect_type(value: Any, kind: type | tuple[type, ...], what: str, path: Path) -> Any:
    """``value`` if it is a ``kind``, else a :class:`DatasetError` naming the file."""
    if not isinstance(value, kind):
        raise DatasetError(f"{path}: {what} is a {type(value).__name__}, not the expected format")
    return value


def check_known_ids(ids: Iterable[tuple[str, str, str]], known: Mapping[str, Any] | set[str], listing: Path) -> None:
    """Every ``(query_id, role, image_id)`` must name an image of the gallery listing, else :class:`DatasetError`."""
    for query_id, role, image_id in ids:
        if image_id not in known:
            raise DatasetError(
                f"query {query_id}: {role} image '{image_id}' is not listed in {listing}; "
                "the annotation and image-list files do not belong together"
            )


def unique_in_order(ids: Sequence[str], listing: Path) -> list[str]:
    """``ids`` without repeats (first occurrence kept); a repeated id would be ranked twice."""
    seen: set[str] = set()
    out = []
    for image_id in ids:
        if image_id not in seen:
            seen.add(image_id)
            out.append(image_id)
    if not out:
        raise DatasetError(f"{listing} lists no images")
    return out
