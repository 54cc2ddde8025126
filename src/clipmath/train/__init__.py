"""Training of the learned parts: one :class:`TrainerSpec` per trainer in :data:`TRAINERS` (SIMAT heads, CLIP4Cir
fine-tuning + Combiner, SEARLE OTI + phi, CLIP4IDC, the caption LM), run by :func:`train` through one loop."""

from clipmath.options import setting
from clipmath.train.options import RunOptions, ValidationOptions
from clipmath.train.run import fit_job, train
from clipmath.train.specs import TRAINERS, TrainerError, TrainerSpec, TrainJob, TrainReport

__all__ = [
    "TRAINERS",
    "RunOptions",
    "TrainJob",
    "TrainReport",
    "TrainerError",
    "TrainerSpec",
    "ValidationOptions",
    "fit_job",
    "setting",
    "train",
]
