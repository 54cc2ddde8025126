"""Caption sentences from a file: the one reader behind caption corpora (DeCap, the caption memory) and caption-LM
training."""

from __future__ import annotations

import json
from pathlib import Path

from clipmath.errors import DatasetError


def read_caption_texts(path: str | Path) -> list[str]:
    """Caption sentences from a text file (one per line) or a JSON list of strings / of items with ``captions``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"caption text file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    items = data.values() if isinstance(data, dict) else data
    texts: list[str] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and isinstance(item.get("captions"), list):
            texts.extend(str(c) for c in item["captions"])
        else:
            raise DatasetError(f"{path}: expected strings or items with a 'captions' list, got {str(item)[:60]!r}")
    return [t.strip() for t in texts if t.strip()]
