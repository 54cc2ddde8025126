"""The trainer registry: one :class:`TrainerSpec` per learned part, looked up by name in :data:`TRAINERS`.

A spec names the dataclass of the data a run reads (``inputs``), the dataclass of its settings (``config``, stored in
the checkpoint it writes) and the function that runs it (``run(job) -> TrainReport``). Front ends read the rest from
the dataclasses: ``clipmath train NAME`` has one option per field, with the field's help and default. Adding a trainer
is one file (inputs, config, run function) and one registration::

    from clipmath.train import TRAINERS, TrainerSpec

    TRAINERS.register("mine", TrainerSpec(
        name="mine", summary="my learned part", inputs=MyInputs, config=MyConfig, run="my_package.mine:run",
    ))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipmath.errors import ClipmathError
from clipmath.registry import Registry, import_ref
from clipmath.train.options import RunOptions, ValidationOptions

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

__all__ = ["TRAINERS", "TrainJob", "TrainReport", "TrainerError", "TrainerSpec"]


class TrainerError(ClipmathError):
    """An unknown trainer, or settings a trainer does not take."""


@dataclass(frozen=True)
class TrainerSpec:
    """One learned part: what it is, what it reads, its settings and how to run it.

    ``inputs`` / ``config``: dataclasses (fields declared with :func:`clipmath.train.options.setting`); ``run``:
    ``(TrainJob) -> TrainReport`` or a lazy ``"module:function"``; ``validates``: it takes the shared
    :class:`ValidationOptions`; ``seeds``: it can train once per seed; ``encoder``: it trains in an image–text
    encoder (``False``: the run loads what it needs itself, as the caption LM trainer does); ``help``: a longer
    description with examples.
    """

    name: str
    summary: str
    inputs: type
    config: type
    run: str | Callable[[TrainJob], TrainReport]
    validates: bool = True
    seeds: bool = True
    encoder: bool = True
    help: str = ""

    def execute(self, job: TrainJob) -> TrainReport:
        runner = import_ref(self.run) if isinstance(self.run, str) else self.run
        return runner(job)


@dataclass
class TrainJob:
    """Everything one run needs: the encoder it trains in (``None`` for trainers without one), its inputs, its
    config and the shared run and validation options."""

    spec: TrainerSpec
    encoder: Encoder | None
    inputs: Any
    config: Any
    run: RunOptions
    validation: ValidationOptions = field(default_factory=ValidationOptions)


@dataclass
class TrainReport:
    """What a run did, JSON-ready (``payload``) and as lines for a terminal (``lines``)."""

    payload: dict[str, Any]
    lines: list[str]


TRAINERS: Registry[TrainerSpec] = Registry("trainer", error=TrainerError, builtins="clipmath.train.builtin_trainers")
