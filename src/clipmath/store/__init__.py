"""Gallery storage: vectors + ids + metadata on disk, and the folder indexer that fills it."""

from clipmath.store.gallery import Gallery, GallerySnapshot, ItemRecord, StoreInfo
from clipmath.store.images import IMAGE_SUFFIXES, ImageDecodeError, decode_image
from clipmath.store.indexer import IndexConfig, IndexReport, index_folder, list_images

__all__ = [
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
