"""What every indexing engine shares about one file: the candidate to read, its content hash, and the check that
its vector is finite in the store's precision."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipmath.imageio import ImageDecodeError, open_regular_file
from clipmath.store.records import ItemRecord


@dataclass
class Candidate:
    """A new or changed file that must be read: its id, path, and the size and mtime it had when listed."""

    id: str
    path: Path
    size: int
    mtime_ns: int


#: The reason recorded for an image whose embedding is not finite (it is never stored).
NON_FINITE = "the model gave a non-finite vector (NaN or infinity) for it: not stored"


def finite_vector(vector: np.ndarray, dtype: np.dtype) -> bool:
    """Whether ``vector`` is finite in the store's precision (a float32 value beyond float16's range is not)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.asarray(vector).astype(dtype)).all())


def drop_non_finite(
    records: list[ItemRecord], vectors: np.ndarray | None, dtype: np.dtype, bad: list
) -> tuple[list[ItemRecord], np.ndarray | None]:
    """The records whose vectors are finite in ``dtype``; the others are added to ``bad`` (as bad files)."""
    if vectors is None or not records:
        return records, vectors
    with np.errstate(over="ignore", invalid="ignore"):
        keep = np.isfinite(np.asarray(vectors).astype(dtype)).all(axis=1)
    if keep.all():
        return records, vectors
    bad.extend((r.id, NON_FINITE, r.size, r.mtime_ns) for r, ok in zip(records, keep.tolist()) if not ok)
    kept = [r for r, ok in zip(records, keep.tolist()) if ok]
    return kept, (np.asarray(vectors)[keep] if kept else None)


def hash_file(candidate: Candidate) -> str | ImageDecodeError:
    digest = hashlib.sha256()
    try:
        with open_regular_file(candidate.path) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except ImageDecodeError as exc:
        return exc
    except FileNotFoundError:
        return ImageDecodeError("file disappeared during indexing", "unreadable")
    except PermissionError:
        return ImageDecodeError("permission denied", "unreadable")
    except OSError as exc:
        return ImageDecodeError(f"unreadable: {exc.strerror or exc}", "unreadable")
    return digest.hexdigest()
