"""Gallery storage: vectors + ids + metadata on disk, the folder indexer that fills it, and its check/repair."""

from clipmath.store.check import CheckReport, check
from clipmath.store.gallery import Gallery, GallerySnapshot, ItemRecord, StoreInfo
from clipmath.store.images import IMAGE_SUFFIXES, ImageDecodeError, decode_image
from clipmath.store.indexer import IndexConfig, IndexReport, index_folder, list_images
from clipmath.store.repair import RepairReport, repair

__all__ = [
    "CheckReport",
    "RepairReport",
    "check",
    "repair",
    "IMAGE_SUFFIXES",
    "Gallery",
    "GallerySnapshot",
    "ImageDecodeError",
    "IndexConfig",
    "IndexReport",
    "ItemRecord",
    "StoreInfo",
    "decode_image",
    "index_folder",
    "list_images",
]
