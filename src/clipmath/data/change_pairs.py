"""Records shared by the image-difference datasets (CLEVR-Change, Spot-the-Diff, the generated change set)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from clipmath.errors import DatasetError

NO_CHANGE = "distractor"  # the change type of CLEVR-Change's no-change (non-semantic) pairs


@dataclass(frozen=True)
class ChangePair:
    """Two images and the captions of what changed from ``before`` to ``after``.

    ``pair_id`` is the image id the dataset's COCO-format reference file uses (``"000123.png"``, CLEVR-Change's
    no-change pairs ``"000123.png_n"``, Spot-the-Diff ``"256.png"``), so predictions can be scored against it.
    ``change_type``: ``color``/``material``/``texture``/``add``/``drop``/``move``, ``distractor`` for a no-change
    pair, ``""`` where the dataset gives no type (Spot-the-Diff).
    """

    pair_id: str
    before: Path
    after: Path
    captions: tuple[str, ...]
    change_type: str = ""

    @property
    def changed(self) -> bool:
        return self.change_type != NO_CHANGE


@dataclass
class ChangeDataset:
    """One split of an image-difference dataset."""

    name: str
    split: str
    root: Path
    pairs: list[ChangePair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def queries(self) -> list[ChangePair]:
        """The pairs (what the evaluation harness counts as queries)."""
        return self.pairs

    @property
    def benchmark(self) -> str:
        """The registered benchmark name (``clipmath.eval.BENCHMARKS``)."""
        return self.name

    def types(self) -> Counter:
        return Counter(p.change_type for p in self.pairs)

    def references(self) -> dict[str, list[str]]:
        """Pair id -> reference captions."""
        return {p.pair_id: list(p.captions) for p in self.pairs}

    def check_images(self) -> None:
        """Raise a :class:`DatasetError` naming the first missing image."""
        for pair in self.pairs:
            for path in (pair.before, pair.after):
                if not path.is_file():
                    raise DatasetError(f"{self.name}: image {path} is missing (pair {pair.pair_id})")


def read_json(path: Path, what: str):
    """Load a dataset JSON file, with a one-line error naming the missing or broken file."""
    import json

    if not path.is_file():
        raise DatasetError(f"{what}: {path.name} is missing from {path.parent}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what}: {path} is not valid JSON ({exc})") from None
