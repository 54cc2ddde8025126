"""Feature pre-computation for training on a frozen encoder (SIMAT heads, the Combiner, phi, OTI).

The encoder runs once per image and per text; the features (L2-normalised float32, exactly what
:meth:`Encoder.encode_images` returns) are kept in memory and, with a cache folder, on disk as safetensors keyed by
file path, size and modification time, so a second run (another seed, more epochs) skips the encoder entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipmath.encoders.base import Encoder
from clipmath.errors import DatasetError


class FeatureCache:
    """Normalised image and text features of one encoder (and its preprocessing)."""

    def __init__(
        self, encoder: Encoder, folder: str | Path | None = None, batch_size: int = 64, progress: bool = True
    ) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.progress = progress
        self.folder = Path(folder) / _slug(f"{encoder.info.model_id}--{encoder.transform.key}") if folder else None
        self._tables: dict[str, dict[str, np.ndarray]] = {"images": {}, "texts": {}}
        if self.folder is not None:
            for kind in self._tables:
                self._tables[kind] = self._load(kind)

    def images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Features ``(N, D)`` of image files (decoded and encoded only when not cached)."""
        keys = [_image_key(Path(p)) for p in paths]
        table = self._tables["images"]
        todo = sorted({(k, str(p)) for k, p in zip(keys, paths) if k not in table})
        if todo:
            # decoded and prepared in worker processes while the model runs (bounded memory, see encoders.pipeline)
            encoded = self.encoder.encode_files(
                [path for _, path in todo], batch_size=self.batch_size, progress=self.progress
            )
            if encoded.failed:
                index, reason = encoded.failed[0]
                raise DatasetError(f"cannot read image {todo[index][1]}: {reason}")
            table.update({todo[i][0]: vector for i, vector in zip(encoded.indices, encoded.vectors)})
            self._save("images")
        return _stack([table[k] for k in keys], self.encoder.dim)

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Features ``(N, D)`` of texts."""
        table = self._tables["texts"]
        todo = sorted({t for t in texts if t not in table})
        if todo:
            vectors = self.encoder.encode_texts(todo, batch_size=max(self.batch_size, 256), progress=self.progress)
            table.update(zip(todo, vectors))
            self._save("texts")
        return _stack([table[t] for t in texts], self.encoder.dim)

    # ---- disk --------------------------------------------------------------------------------------------------
    def _files(self, kind: str) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{kind}.safetensors", self.folder / f"{kind}.json"

    def _load(self, kind: str) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        weights, keys_file = self._files(kind)
        if not (weights.exists() and keys_file.exists()):
            return {}
        try:
            keys = json.loads(keys_file.read_text())
            features = load_file(str(weights))["features"]
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is rebuilt
        if len(keys) != len(features):
            return {}
        return dict(zip(keys, features))

    def _save(self, kind: str) -> None:
        if self.folder is None:
            return
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        table = self._tables[kind]
        keys = list(table)
        weights, keys_file = self._files(kind)
        features = np.stack([table[k] for k in keys]).astype(np.float32)
        save_file({"features": features}, str(weights) + ".tmp")
        keys_file.with_suffix(".json.tmp").write_text(json.dumps(keys))
        os.replace(str(weights) + ".tmp", weights)
        os.replace(keys_file.with_suffix(".json.tmp"), keys_file)


def _image_key(path: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _stack(rows: list[np.ndarray], dim: int) -> torch.Tensor:
    if not rows:
        return torch.zeros(0, dim)
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def _slug(text: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
