"""Benchmark loaders: each reads one benchmark from the folder layout its official release uses.

    >>> from clipmath.data import load_cirr, load_circo, load_fashioniq, load_simat
    >>> cirr = load_cirr("/data/CIRR", "val")            # CIRDataset
    >>> cirr.queries[0].reference_id, cirr.queries[0].caption, cirr.queries[0].target_ids
    >>> cirr.image_path(cirr.gallery_ids[0])             # Path of a gallery image

Composed-retrieval benchmarks (FashionIQ, CIRR, CIRCO) load into :class:`CIRDataset` (queries of
:class:`CIRQuery`); SIMAT loads into :class:`SimatDataset` (queries of :class:`SimatQuery`). Ranking, metrics and
submission files are in :mod:`clipmath.eval`. Each module's docstring shows its folder layout; an incomplete folder
raises :class:`clipmath.errors.DatasetError` naming the missing file.
"""

from __future__ import annotations

from pathlib import Path

from clipmath.data.base import CIRDataset, CIRQuery, ImageCollection
from clipmath.data.circo import load_circo
from clipmath.data.cirr import load_cirr
from clipmath.data.fashioniq import CATEGORIES as FASHIONIQ_CATEGORIES
from clipmath.data.fashioniq import join_captions, load_fashioniq, load_fashioniq_all
from clipmath.data.simat import SimatDataset, SimatQuery, SimatTriplet, load_simat
from clipmath.errors import DatasetError

#: Benchmark name -> (evaluable splits, default split). ``fashioniq`` loads its three categories.
CIR_BENCHMARKS = {
    "fashioniq": (("val",), "val"),
    "cirr": (("val", "test1"), "val"),
    "circo": (("val", "test"), "val"),
}


def load_cir_benchmark(
    benchmark: str, root: str | Path, split: str | None = None, check_images: bool = True
) -> list[CIRDataset]:
    """Load a composed-retrieval benchmark: one dataset for CIRR/CIRCO, one per category for FashionIQ.

    ``benchmark`` may also name one FashionIQ category (``fashioniq-dress``).
    """
    name, _, category = benchmark.lower().partition("-")
    if name not in CIR_BENCHMARKS:
        raise DatasetError(
            f"unknown benchmark '{benchmark}': use one of {', '.join(CIR_BENCHMARKS)} "
            f"(or fashioniq-{{{','.join(FASHIONIQ_CATEGORIES)}}})"
        )
    split = split or CIR_BENCHMARKS[name][1]
    if name == "fashioniq":
        categories = [category] if category else list(FASHIONIQ_CATEGORIES)
        return [load_fashioniq(root, c, split, check_images) for c in categories]
    if category:
        raise DatasetError(f"benchmark '{benchmark}': only FashionIQ has categories")
    loader = load_cirr if name == "cirr" else load_circo
    return [loader(root, split, check_images)]


__all__ = [
    "CIR_BENCHMARKS",
    "FASHIONIQ_CATEGORIES",
    "CIRDataset",
    "CIRQuery",
    "ImageCollection",
    "SimatDataset",
    "SimatQuery",
    "SimatTriplet",
    "join_captions",
    "load_cir_benchmark",
    "load_circo",
    "load_cirr",
    "load_fashioniq",
    "load_fashioniq_all",
    "load_simat",
]
