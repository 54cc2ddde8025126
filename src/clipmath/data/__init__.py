"""Benchmark loaders: each reads one benchmark from the folder layout its official release uses.

    >>> from clipmath.data import load_cirr, load_circo, load_fashioniq, load_simat
    >>> cirr = load_cirr("/data/CIRR", "val")            # CIRDataset
    >>> cirr.queries[0].reference_id, cirr.queries[0].caption, cirr.queries[0].target_ids
    >>> cirr.image_path(cirr.gallery_ids[0])             # Path of a gallery image

Composed-retrieval benchmarks (FashionIQ, CIRR, CIRCO) load into :class:`CIRDataset` (queries of
:class:`CIRQuery`); SIMAT loads into :class:`SimatDataset` (queries of :class:`SimatQuery`). Ranking, metrics and
submission files are in :mod:`clipmath.eval`, whose benchmark registry (``clipmath.eval.BENCHMARKS``) names each
benchmark once: its splits, defaults and loader. Each module's docstring shows its folder layout; an incomplete folder
raises :class:`clipmath.errors.DatasetError` naming the missing file.
"""

from __future__ import annotations

from clipmath.data.base import CIRDataset, CIRQuery, ImageCollection
from clipmath.data.circo import load_circo
from clipmath.data.cirr import load_cirr
from clipmath.data.fashioniq import CATEGORIES as FASHIONIQ_CATEGORIES
from clipmath.data.fashioniq import join_captions, load_fashioniq, load_fashioniq_all
from clipmath.data.simat import SimatDataset, SimatQuery, SimatTriplet, load_simat

__all__ = [
    "FASHIONIQ_CATEGORIES",
    "CIRDataset",
    "CIRQuery",
    "ImageCollection",
    "SimatDataset",
    "SimatQuery",
    "SimatTriplet",
    "join_captions",
    "load_circo",
    "load_cirr",
    "load_fashioniq",
    "load_fashioniq_all",
    "load_simat",
]
