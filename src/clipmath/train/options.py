"""The run and validation options every trainer shares, declared once as dataclass fields (see
:mod:`clipmath.options`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipmath.errors import ClipmathError
from clipmath.options import setting

__all__ = ["RunOptions", "ValidationOptions"]


@dataclass
class RunOptions:
    """Where a run writes and how it repeats: shared by every trainer."""

    output: Path | None = setting(
        None, "Checkpoint to write: a folder (or NAME.safetensors + NAME.json). An unfinished run there is resumed; "
        "with 'seeds', one sub-folder per seed.", short="-o", required=True,
    )  # fmt: skip
    seeds: list[int] | None = setting(
        None, "Train once per seed into OUTPUT/seed-N and report the validation metric and final loss as mean ± std."
    )
    resume: bool = setting(True, "Continue an unfinished run in the output (off: overwrite it).")
    cache: Path | None = setting(None, "Folder for cached features (reused by later runs, seeds and epochs).")
    progress: bool = True

    def __post_init__(self) -> None:
        if self.output is not None:
            self.output = Path(self.output)
        if self.seeds is not None:
            if len(set(self.seeds)) != len(self.seeds):
                raise ClipmathError("'seeds': each seed once")
            self.seeds = list(self.seeds) or None


@dataclass
class ValidationOptions:
    """Held-out data scored during training: triplets of one's own, or a benchmark's validation split."""

    val_triplets: Path | None = setting(
        None, "Held-out triplets (same formats as the training triplets): Recall@1/5/10 and mean rank after every "
        "validation epoch."
    )  # fmt: skip
    val_images: Path | None = setting(
        None, "Folder that the validation files' paths are under (default: their folder)."
    )
    val_gallery: Path | None = setting(
        None, "Rank validation targets among the images of this folder (default: the validation triplets' own images)."
    )
    val_dataset: str | None = setting(
        None, "Validate on a benchmark instead, with the eval harness' metrics (fashioniq, cirr, circo; simat for "
        "the adapter); needs 'val_path'."
    )  # fmt: skip
    val_path: Path | None = setting(None, "Folder of the validation benchmark, in its official layout.")
    val_split: str | None = setting(None, "Split of the validation benchmark (default: its validation split).")
