"""SIMAT (Couairon et al., 2021): text-driven image transformation, judged on Visual Genome region crops.

Folder layout (the official repository after its ``prepare_dataset.py`` has cropped the regions)::

    SIMAT/
        simat_db/transfos.csv       ,transfo_id,region_id,field,value,target,norm,query_ids,target_ids,dataset_id,
                                    norm2,is_test
        simat_db/triplets.csv       region_id,subj,rel,obj,dataset_id
        simat_db/captions.txt       one caption per line (optional here; gives each query's target caption text)
        simat_db/images/images/<region_id>.png

Each image is one region annotated with a (subject, relation, object) triplet. A transformation query takes a
source image and asks to swap one slot of its triplet: ``field`` (``subj``, ``rel`` or ``obj``) changes from the
source word ``value`` to the target word ``target`` ("dog laying on a pillow", obj: pillow -> rug). The expected
answer is any *other* image showing the target triplet ("dog laying on a rug").

Domains: ``dev`` (``is_test == False``) and ``test`` (``is_test == True``). The gallery is every image of
``triplets.csv`` ordered by ``dataset_id`` (the order SIMAT's embeddings use).

Per query the loader keeps what an oracle needs (:mod:`clipmath.eval.simat`): the target triplet (the source
triplet with the slot replaced) and ``target_caption_id``, the ``target_ids`` column, which indexes
``captions.txt`` and the columns of SIMAT's OSCAR similarity matrix. (Caption ``i`` describes the ``i``-th
distinct triplet of ``triplets.csv`` in order of first appearance.) ``weight`` is ``1/sqrt(norm2)``, the
per-query weight of SIMAT's score.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from clipmath.data.base import ImageCollection, require_dir, require_file
from clipmath.errors import DatasetError

DOMAINS = ("dev", "test")
FIELDS = ("subj", "rel", "obj")
LAYOUT = (
    "SIMAT/simat_db/transfos.csv, SIMAT/simat_db/triplets.csv, SIMAT/simat_db/images/images/<region_id>.png "
    "(run SIMAT's prepare_dataset.py to crop the images)"
)
_TRANSFO_COLUMNS = ("transfo_id", "region_id", "field", "value", "target", "target_ids", "norm2", "is_test")
_TRIPLET_COLUMNS = ("region_id", "subj", "rel", "obj", "dataset_id")


@dataclass(frozen=True)
class SimatTriplet:
    """A (subject, relation, object) annotation, e.g. ``("dog", "laying in", "pillow")``."""

    subj: str
    rel: str
    obj: str

    def replace(self, field: str, word: str) -> SimatTriplet:
        """This triplet with slot ``field`` (``subj``/``rel``/``obj``) set to ``word``."""
        values = {"subj": self.subj, "rel": self.rel, "obj": self.obj, field: word}
        return SimatTriplet(values["subj"], values["rel"], values["obj"])

    def get(self, field: str) -> str:
        return {"subj": self.subj, "rel": self.rel, "obj": self.obj}[field]


@dataclass(frozen=True)
class SimatQuery:
    """One transformation query: in image ``source_id``, change ``field`` from ``source_word`` to ``target_word``."""

    query_id: str
    source_id: str
    field: str
    source_word: str
    target_word: str
    source_triplet: SimatTriplet
    target_triplet: SimatTriplet
    target_caption_id: int
    target_caption: str | None
    weight: float


@dataclass
class SimatDataset(ImageCollection):
    """One SIMAT domain: its transformation queries, the full image database, and each image's triplet."""

    name: str
    split: str
    root: Path
    queries: list[SimatQuery]
    gallery_ids: list[str]
    image_paths: dict[str, Path]
    triplets: dict[str, SimatTriplet]
    captions: list[str] | None

    benchmark = "simat"
    #: Every SIMAT domain can be scored (the oracle judges the retrieved images).
    has_targets = True

    def __len__(self) -> int:
        return len(self.queries)

    def target_image_ids(self, query: SimatQuery) -> list[str]:
        """The gallery images annotated with ``query``'s target triplet (its ground-truth answers), gallery order."""
        return self._images_by_triplet.get(query.target_triplet, [])

    @cached_property
    def _images_by_triplet(self) -> dict[SimatTriplet, list[str]]:
        by_triplet: dict[SimatTriplet, list[str]] = {}
        for image_id in self.gallery_ids:
            by_triplet.setdefault(self.triplets[image_id], []).append(image_id)
        return by_triplet


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} lacks column(s) {', '.join(missing)}; is this SIMAT's official file?")
        return list(reader)


def _as_bool(text: str, path: Path) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise DatasetError(f"{path}: is_test value {text!r} is neither True nor False")


def load_simat(root: str | Path, domain: str = "test", check_images: bool = True) -> SimatDataset:
    """Load SIMAT's ``dev`` or ``test`` domain from the official layout.

    ``check_images``: stat every database image and raise :class:`DatasetError` if any is missing.
    """
    root = Path(root)
    if domain not in DOMAINS:
        raise DatasetError(f"unknown SIMAT domain '{domain}': use dev or test")
    transfos_path = require_file(root, "simat_db/transfos.csv", "SIMAT", LAYOUT)
    triplets_path = require_file(root, "simat_db/triplets.csv", "SIMAT", LAYOUT)
    images_dir = require_dir(root, "simat_db/images/images", "SIMAT", LAYOUT)
    captions_path = root / "simat_db" / "captions.txt"
    captions = captions_path.read_text(encoding="utf-8").splitlines() if captions_path.is_file() else None

    triplets: dict[str, SimatTriplet] = {}
    order: dict[str, int] = {}
    for row in _read_csv(triplets_path, _TRIPLET_COLUMNS):
        region = row["region_id"]
        triplets[region] = SimatTriplet(row["subj"], row["rel"], row["obj"])
        try:
            order[region] = int(row["dataset_id"])
        except ValueError:
            raise DatasetError(f"{triplets_path}: region {region} has a non-integer dataset_id") from None
    if len(set(order.values())) != len(order):
        raise DatasetError(f"{triplets_path}: two regions share a dataset_id")
    gallery_ids = sorted(order, key=order.__getitem__)

    want_test = domain == "test"
    queries = []
    for row in _read_csv(transfos_path, _TRANSFO_COLUMNS):
        if _as_bool(row["is_test"], transfos_path) != want_test:
            continue
        source, field = row["region_id"], row["field"]
        if source not in triplets:
            raise DatasetError(
                f"{transfos_path}: transformation {row['transfo_id']} uses region {source}, which "
                f"is not in {triplets_path.name}; the two files do not belong together"
            )
        if field not in FIELDS:
            raise DatasetError(f"{transfos_path}: transformation {row['transfo_id']} has field {field!r}")
        source_triplet = triplets[source]
        if source_triplet.get(field) != row["value"]:
            raise DatasetError(
                f"{transfos_path}: transformation {row['transfo_id']} changes {field} "
                f"'{row['value']}' but region {source} has '{source_triplet.get(field)}'"
            )
        caption_id = int(row["target_ids"])
        queries.append(
            SimatQuery(
                query_id=row["transfo_id"],
                source_id=source,
                field=field,
                source_word=row["value"],
                target_word=row["target"],
                source_triplet=source_triplet,
                target_triplet=source_triplet.replace(field, row["target"]),
                target_caption_id=caption_id,
                target_caption=captions[caption_id] if captions is not None and caption_id < len(captions) else None,
                weight=1.0 / math.sqrt(float(row["norm2"])),
            )
        )
    if not queries:
        raise DatasetError(f"{transfos_path} has no {domain} transformations")

    dataset = SimatDataset(
        name="simat",
        split=domain,
        root=root,
        queries=queries,
        gallery_ids=gallery_ids,
        image_paths={region: images_dir / f"{region}.png" for region in gallery_ids},
        triplets=triplets,
        captions=captions,
    )
    if check_images:
        dataset.check_images()
    return dataset
