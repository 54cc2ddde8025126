"""The gallery feature cache of benchmark evaluation: each split's gallery encoded once per model and preprocessing.

Gallery images are indexed into a clipmath store (:class:`clipmath.store.Gallery`) keyed by model, benchmark,
split, preprocessing and dataset folder, under ``cache_root`` (default ``<clipmath cache>/eval``):
``<model>/<benchmark>-<split>-<preprocessing>-<folder hash>``. Items are the images' paths relative to the dataset
folder, so a second run (any method, any λ) encodes no image at all, and an interrupted first run resumes.
Every benchmark's reference images are gallery members, so references reuse the stored vectors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipmath.encoders.base import Encoder
from clipmath.errors import DatasetError
from clipmath.eval.benchmarks import spec_of
from clipmath.eval.config import EvalConfig


def default_cache_root() -> Path:
    """Where evaluation feature stores live by default: ``<clipmath cache>/eval``."""
    from clipmath.paths import cache_dir

    return cache_dir() / "eval"


def model_slug(model_id: str) -> str:
    """A folder name for a model id (``openai/clip-vit-base-patch32`` → ``openai--clip-vit-base-patch32``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id.replace("/", "--")).strip("-.")
    return slug[:80] or "model"


def feature_store_path(cache_root: str | Path | None, encoder: Encoder, datasets: Sequence[Any]) -> Path:
    """The store caching ``datasets``' gallery features for ``encoder`` (the key: see the module docstring)."""
    benchmark, split = spec_of(datasets).name, datasets[0].split
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    folder = hashlib.sha256(str(Path(datasets[0].root).resolve()).encode()).hexdigest()[:8]
    return root / model_slug(encoder.info.model_id) / f"{benchmark}-{split}-{encoder.transform.key}-{folder}"


def _relative_ids(dataset: Any) -> dict[str, str]:
    """Gallery id -> the image's path relative to the dataset folder (the store's item id)."""
    out = {}
    for image_id in dataset.gallery_ids:
        path = dataset.image_path(image_id)
        try:
            out[image_id] = path.relative_to(dataset.root).as_posix()
        except ValueError:
            raise DatasetError(f"{dataset.name}: image {path} is outside the dataset folder {dataset.root}") from None
    return out


@dataclass
class GalleryFeatures:
    """Per dataset (by name), its gallery vectors in ``gallery_ids`` order; how many images had to be encoded."""

    vectors: dict[str, np.ndarray]
    store: Path | None
    encoded_images: int
    gallery_images: int


def gallery_features(
    datasets: Sequence[Any],
    encoder: Encoder,
    cache_root: str | Path | None = None,
    config: EvalConfig | None = None,
) -> GalleryFeatures:
    """Gallery vectors of every dataset, from the feature store (encoding only images not stored yet)."""
    from clipmath.store import Gallery, IndexConfig, index_folder

    config = config or EvalConfig()
    relative = {d.name: _relative_ids(d) for d in datasets}
    files = list(dict.fromkeys(path for ids in relative.values() for path in ids.values()))
    if config.reencode:
        return _encode_in_memory(datasets, encoder, relative, files, config)
    store = feature_store_path(cache_root, encoder, datasets)
    index_config = IndexConfig(batch_size=config.batch_size)
    report = index_folder(store, datasets[0].root, encoder, index_config, files=files, progress=config.progress)
    with Gallery.open(store) as gallery:
        snapshot = gallery.snapshot()
    row_of = {item_id: row for row, item_id in enumerate(snapshot.ids)}
    missing = [f for f in files if f not in row_of]
    if missing:
        reasons = dict(report.bad)
        raise DatasetError(
            f"{len(missing)} gallery image(s) could not be read, e.g. {missing[0]}: "
            f"{reasons.get(missing[0], 'unreadable')}; fix or re-download them"
        )
    vectors = {
        d.name: np.asarray(snapshot.vectors[[row_of[relative[d.name][i]] for i in d.gallery_ids]], dtype=np.float32)
        for d in datasets
    }
    return GalleryFeatures(vectors, store, report.added, len(files))


def _encode_in_memory(
    datasets: Sequence[Any], encoder: Encoder, relative: dict, files: list[str], config: EvalConfig
) -> GalleryFeatures:
    root = Path(datasets[0].root)
    step = max(1, config.batch_size)
    # decoded and prepared in the encoder's worker processes while its model runs (clipmath.encoders.pipeline)
    encoded = encoder.encode_files([root / name for name in files], batch_size=step, progress=config.progress)
    if encoded.failed:
        index, reason = encoded.failed[0]
        raise DatasetError(f"gallery image {files[index]} could not be read: {reason}")
    matrix = encoded.vectors
    row_of = {name: row for row, name in enumerate(files)}
    vectors = {d.name: matrix[[row_of[relative[d.name][i]] for i in d.gallery_ids]] for d in datasets}
    return GalleryFeatures(vectors, None, len(files), len(files))
