"""The training loop every learned method shares.

A method is a :class:`TrainingTask`: the module it trains, its batches, its loss, and the composer it becomes.
:func:`fit` does the rest: seeding, AdamW, mixed precision on CUDA, a progress bar with the running loss, validation
after each epoch (``validate(composer) -> {metric: value}``), a checkpoint after each epoch (safetensors + JSON, the
config inside), and resuming from the last one. :func:`fit_seeds` repeats a run over several seeds and summarises
the validation metric as mean ± std.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from clipmath.compose.base import Composer
from clipmath.compose.checkpoint import Checkpoint, describe, exists, load_checkpoint, resume_dir, save_checkpoint
from clipmath.encoders.base import Encoder
from clipmath.encoders.precision import autocast_dtype
from clipmath.encoders.runtime import cuda_errors
from clipmath.errors import ClipmathError
from clipmath.train.config import TrainConfig

log = logging.getLogger(__name__)

#: A validation hook: metrics of a composer on held-out data (e.g. ``{"recall@1": 0.42}``), higher is better.
ValidateFn = Callable[[Composer], dict[str, float]]


class TrainingError(ClipmathError):
    """A training run cannot start or continue (bad data, an incompatible checkpoint in the output path)."""


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
    """``(size, rows)`` over ``count`` examples in the order ``generator`` draws, ``batch_size`` at a time; a batch of
    one is skipped (contrastive and distillation losses need two)."""
    order = torch.randperm(count, generator=generator)
    for rows in order.split(max(1, batch_size)):
        if len(rows) > 1:
            yield len(rows), rows


class TrainingTask(ABC):
    """One learned method's training: subclasses set ``kind`` and ``model`` and implement the abstract methods."""

    kind: str = ""
    model: nn.Module

    def __init__(self, encoder: Encoder, config: TrainConfig) -> None:
        self.encoder = encoder
        self.config = config

    @abstractmethod
    def num_examples(self) -> int:
        """Examples in one epoch."""

    @abstractmethod
    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, Any]]:
        """One epoch of ``(batch size, batch)``, shuffled with ``generator``."""

    @abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """The scalar training loss of a batch."""

    @abstractmethod
    def composer(self) -> Composer:
        """The inference method made of the current weights (used for validation)."""

    # ---- defaults that tasks may override ----------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; override to give parts their own learning rate (``{"params", "lr"}``)."""
        return [{"params": self.parameters()}]

    def train_mode(self, training: bool) -> None:
        self.model.train(training)

    def checkpoint_config(self) -> dict[str, Any]:
        """The config stored in the checkpoint (with any size resolved from the encoder)."""
        return self.config.to_dict()

    def checkpoint_extra(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(tensors)

    def write_artifacts(self, folder: Path) -> None:  # noqa: B027 - optional hook
        """Files other than the weights (a fine-tuned encoder writes a whole transformers model folder)."""

    def restore_artifacts(self, folder: Path) -> None:  # noqa: B027 - optional hook
        """Inverse of :meth:`write_artifacts`, when resuming."""

    def preprocessing(self) -> str:
        return self.encoder.transform.key


@dataclass
class TrainResult:
    """What one run did: where its checkpoint is, and per epoch its loss, throughput and validation metrics."""

    checkpoint: Path
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    task: TrainingTask | None = field(default=None, repr=False)  # the trained task (its model, its composer())

    @property
    def final_metrics(self) -> dict[str, float]:
        return dict(self.history[-1].get("metrics", {})) if self.history else {}

    @property
    def first_loss(self) -> float:
        return float(self.history[0]["loss"]) if self.history else math.nan

    @property
    def last_loss(self) -> float:
        return float(self.history[-1]["loss"]) if self.history else math.nan

    @property
    def examples_per_second(self) -> float:
        """Training throughput over the epochs run in this call (excluding validation and saving)."""
        recent = self.history[self.resumed_from_epoch :]
        seconds = sum(e["seconds"] for e in recent)
        return sum(e["examples"] for e in recent) / seconds if seconds else math.nan


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def fit(
    make_task: Callable[[Any], TrainingTask],
    config: TrainConfig,
    output: str | Path,
    validate: ValidateFn | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train the task ``make_task(config)`` builds (after seeding), checkpointing to ``output`` after every epoch.

    With ``resume`` an unfinished run in ``output`` continues where it stopped (a finished one is returned as is);
    without it ``output`` is overwritten.
    """
    output = Path(output)
    seed_everything(config.seed)
    task = make_task(config)
    device = task.encoder.device
    task.encoder.threads.apply()
    _check_trainable(task)
    optimiser = torch.optim.AdamW(task.param_groups(), lr=config.lr, weight_decay=config.weight_decay)
    mixed = autocast_dtype(config.dtype if config.amp else "float32", device)
    use_amp = mixed is not None
    amp_dtype = mixed or torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda")

    history: list[dict[str, Any]] = []
    step = 0
    if exists(output):
        if resume:
            history, step = _restore(task, optimiser, scaler, output)
        else:
            shutil.rmtree(resume_dir(output), ignore_errors=True)
    result = TrainResult(output, config.seed, history, resumed_from_epoch=len(history), task=task)
    if len(history) >= config.epochs or (config.max_steps is not None and step >= config.max_steps):
        log.info("%s: already trained (%d epochs); nothing to do", output, len(history))
        return result

    for epoch in range(len(history), config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        task.train_mode(True)
        started = time.perf_counter()
        total, examples, stop = 0.0, 0, False
        with tqdm(
            total=task.num_examples(),
            unit="ex",
            desc=f"{task.kind} epoch {epoch + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        ) as bar:
            for size, batch in task.batches(generator):
                with cuda_errors(f"training {task.kind} on {device} (step {step})"):
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        loss = task.loss(batch)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"{task.kind}: the loss became {float(loss)} at step {step}; lower 'lr'")
                    optimiser.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if config.grad_clip:
                        scaler.unscale_(optimiser)
                        nn.utils.clip_grad_norm_(task.parameters(), config.grad_clip)
                    scaler.step(optimiser)
                    scaler.update()
                step += 1
                total += float(loss.detach()) * size
                examples += size
                bar.update(size)
                bar.set_postfix(loss=f"{total / examples:.4f}")
                if config.max_steps is not None and step >= config.max_steps:
                    stop = True
                    break
        seconds = time.perf_counter() - started
        if examples == 0:
            raise TrainingError(f"{task.kind}: no training examples (is the data empty or the batch too large?)")
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": total / examples,
            "steps": step,
            "examples": examples,
            "seconds": seconds,
        }
        task.train_mode(False)
        last = stop or epoch + 1 == config.epochs
        if validate is not None and (last or (epoch + 1) % max(1, config.validate_every) == 0):
            with torch.no_grad():
                record["metrics"] = {k: float(v) for k, v in validate(task.composer()).items()}
        history.append(record)
        if last or (epoch + 1) % max(1, config.save_every) == 0:
            _save(task, optimiser, scaler, output, history, step)
        log.info("%s epoch %d: loss %.4f %s", task.kind, epoch + 1, record["loss"], record.get("metrics", ""))
        if stop:
            break
    task.train_mode(False)
    return result


def _check_trainable(task: TrainingTask) -> None:
    """Trained weights must be float32: optimiser updates are lost in half precision (autocast does the rest)."""
    kinds = {p.dtype for p in task.parameters()} - {torch.float32}
    if kinds:
        names = ", ".join(sorted(str(k).replace("torch.", "") for k in kinds))
        raise TrainingError(
            f"{task.kind}: the weights to train are held in {names}; load the model in float32 "
            "(mixed precision comes from the dtype setting through autocast)"
        )


@dataclass
class SeedsReport:
    """Runs of one config over several seeds, with each final metric's mean and standard deviation."""

    results: list[TrainResult]
    summary: dict[str, tuple[float, float]]  # metric -> (mean, sample std)

    def lines(self) -> list[str]:
        n = len(self.results)
        return [f"{name}: {mean:.4f} ± {std:.4f} (n={n})" for name, (mean, std) in self.summary.items()]


def fit_seeds(
    make_task: Callable[[Any], TrainingTask],
    config: TrainConfig,
    seeds: Sequence[int],
    output: str | Path,
    validate: ValidateFn | None = None,
    resume: bool = True,
) -> SeedsReport:
    """One run per seed into ``output/seed-N``; summarise final loss and validation metrics as mean ± std."""
    results = []
    for seed in seeds:
        run_config = replace(config, seed=int(seed))
        results.append(fit(make_task, run_config, Path(output) / f"seed-{seed}", validate, resume))
    return SeedsReport(results, summarise(results, config.monitor))


def summarise(results: Sequence[TrainResult], monitor: str | None = None) -> dict[str, tuple[float, float]]:
    """Mean and sample std over runs of the final loss and of each final validation metric (``monitor`` first)."""
    columns: dict[str, list[float]] = {}
    for result in results:
        for name, value in result.final_metrics.items():
            columns.setdefault(name, []).append(value)
    columns["loss"] = [r.last_loss for r in results]
    order = ([monitor] if monitor in columns else []) + [c for c in columns if c != monitor]
    return {
        name: (statistics.fmean(columns[name]), statistics.stdev(columns[name]) if len(columns[name]) > 1 else 0.0)
        for name in order
    }


# ---- checkpoint + resume state ---------------------------------------------------------------------------------
def _save(
    task: TrainingTask,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    output: Path,
    history: list[dict[str, Any]],
    step: int,
) -> None:
    from safetensors.torch import save_file

    checkpoint = describe(task.kind, task.encoder.info, task.preprocessing(), task.checkpoint_config())
    checkpoint.tensors = task.tensors()
    checkpoint.training = {"seed": task.config.seed, "epochs_done": len(history), "steps": step, "history": history}
    checkpoint.extra = task.checkpoint_extra()
    if not output.suffix == ".safetensors":
        output.mkdir(parents=True, exist_ok=True)
        task.write_artifacts(output)
    save_checkpoint(checkpoint, output)

    tensors, state = _optimiser_tensors(optimiser)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    state.update(
        {
            "epochs_done": len(history),
            "steps": step,
            "scaler": scaler.state_dict(),
            "python_rng": _jsonable(random.getstate()),
            "numpy_rng": _jsonable(np.random.get_state()),
        }
    )
    folder = resume_dir(output)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(staging / "optimizer.safetensors"))
    (staging / "state.json").write_text(json.dumps(state))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def _restore(
    task: TrainingTask, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler, output: Path
) -> tuple[list[dict[str, Any]], int]:
    from safetensors.torch import load_file

    try:
        checkpoint: Checkpoint = load_checkpoint(output)
    except ClipmathError as exc:
        raise TrainingError(f"cannot resume from {output}: {exc}; set 'resume' off to overwrite it") from None
    if checkpoint.kind != task.kind or checkpoint.model_id != task.encoder.info.model_id:
        raise TrainingError(
            f"{output} holds a '{checkpoint.kind}' checkpoint of model '{checkpoint.model_id}'; this run trains "
            f"'{task.kind}' on '{task.encoder.info.model_id}': choose another 'output' or set 'resume' off"
        )
    folder = resume_dir(output)
    if not (folder / "state.json").exists():
        raise TrainingError(f"{output} has no resume state; set 'resume' off to train again from scratch")
    state = json.loads((folder / "state.json").read_text())
    history = list(checkpoint.training.get("history", []))
    if int(state["epochs_done"]) != len(history):
        raise TrainingError(f"{output}: resume state and weights disagree (interrupted save?); set 'resume' off")
    task.restore_artifacts(output)
    if checkpoint.tensors:
        task.load_tensors(checkpoint.tensors)
    tensors = load_file(str(folder / "optimizer.safetensors"))
    optimiser.load_state_dict(_optimiser_state(tensors, state))
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(_python_rng(state["python_rng"]))
    numpy_state = state["numpy_rng"]
    np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    log.info("resuming %s after epoch %d (step %d)", output, len(history), state["steps"])
    return history, int(state["steps"])


def _optimiser_tensors(optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser state dict as flat tensors (``opt.<param>.<name>``) plus JSON for everything else."""
    state_dict = optimiser.state_dict()
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"opt.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": _jsonable(state_dict["param_groups"]), "optimiser_scalars": scalars}


def _optimiser_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> dict[str, Any]:
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
    for key, value in state.get("optimiser_scalars", {}).items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    return {"state": per_param, "param_groups": state["param_groups"]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _python_rng(value: list) -> tuple:
    version, internal, gauss = value
    return version, tuple(internal), gauss
