"""The shared training loop: validation hook, checkpoint per epoch, exact resume, seeds summary, step limits."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from clipmath.compose.base import Composer
from clipmath.compose.checkpoint import load_checkpoint
from clipmath.compose.combiner import CombinerComposer
from clipmath.train.clip4cir import CombinerTask
from clipmath.train.config import AdapterConfig, CombinerConfig
from clipmath.train.loop import TrainingError, fit, fit_seeds

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features():
    generator = torch.Generator().manual_seed(0)
    refs, texts = torch.randn(40, 32, generator=generator), torch.randn(40, 32, generator=generator)
    targets = torch.nn.functional.normalize(refs + texts, dim=-1)
    return refs, texts, targets, torch.arange(40)


def _factory(encoder, features):
    return lambda config: CombinerTask(encoder, config, *features)


def _config(**overrides):
    settings = dict(epochs=4, batch_size=8, lr=1e-3, projection_dim=16, hidden_dim=32, progress=False)
    settings.update(overrides)
    return CombinerConfig(**settings)


def test_validation_hook_and_checkpoint_every_epoch(tmp_path, tiny_encoder, features):
    seen: list[Composer] = []

    def validate(composer: Composer) -> dict[str, float]:
        seen.append(composer)
        return {"score": float(len(seen))}

    result = fit(_factory(tiny_encoder, features), _config(), tmp_path / "run", validate)
    assert len(seen) == 4 and all(isinstance(c, CombinerComposer) for c in seen)
    assert [h["metrics"]["score"] for h in result.history] == [1.0, 2.0, 3.0, 4.0]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4] and result.history[-1]["steps"] == 20
    saved = load_checkpoint(tmp_path / "run", "combiner", tiny_encoder)
    assert saved.training["epochs_done"] == 4 and saved.config["lr"] == 1e-3 and saved.config["hidden_dim"] == 32
    assert saved.training["history"][-1]["metrics"] == {"score": 4.0}


def test_resume_continues_exactly_where_it_stopped(tmp_path, tiny_encoder, features):
    factory = _factory(tiny_encoder, features)
    straight = fit(factory, _config(), tmp_path / "straight")
    fit(factory, _config(epochs=2), tmp_path / "interrupted")
    resumed = fit(factory, _config(), tmp_path / "interrupted")
    assert resumed.resumed_from_epoch == 2 and len(resumed.history) == 4
    a = load_checkpoint(tmp_path / "straight").tensors
    b = load_checkpoint(tmp_path / "interrupted").tensors
    assert all(torch.equal(a[k], b[k]) for k in a)  # same weights as an uninterrupted run, bit for bit
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    again = fit(factory, _config(), tmp_path / "interrupted")  # finished: nothing to do
    assert again.resumed_from_epoch == 4


def test_output_of_another_kind_or_no_resume(tmp_path, tiny_encoder, features):
    fit(_factory(tiny_encoder, features), _config(epochs=1), tmp_path / "run")
    from clipmath.train.adapter import AdapterTask

    def adapter(config):
        return AdapterTask(tiny_encoder, config, features[0], features[1], torch.arange(40))

    with pytest.raises(TrainingError, match="holds a 'combiner' checkpoint"):
        fit(adapter, AdapterConfig(epochs=1, progress=False), tmp_path / "run")
    fresh = fit(adapter, AdapterConfig(epochs=1, progress=False), tmp_path / "run", resume=False)
    assert fresh.resumed_from_epoch == 0 and load_checkpoint(tmp_path / "run").kind == "adapter"


def test_max_steps_and_save_every(tmp_path, tiny_encoder, features):
    result = fit(_factory(tiny_encoder, features), _config(max_steps=7), tmp_path / "run")
    assert result.history[-1]["steps"] == 7 and len(result.history) == 2
    result = fit(_factory(tiny_encoder, features), _config(save_every=3), tmp_path / "sparse")
    state = json.loads((tmp_path / "sparse" / "resume" / "state.json").read_text())
    assert state["epochs_done"] == 4 and len(result.history) == 4


def test_seeds_report_mean_and_std(tmp_path, tiny_encoder, features):
    def validate(composer):
        return {"norm": float(next(composer.combiner.parameters()).abs().sum())}

    report = fit_seeds(_factory(tiny_encoder, features), _config(epochs=1), [1, 2, 3], tmp_path / "seeds", validate)
    values = [r.final_metrics["norm"] for r in report.results]
    assert len(set(values)) == 3  # seeds change the initial weights
    assert report.summary["norm"] == pytest.approx((statistics.fmean(values), statistics.stdev(values)))
    assert set(report.summary) == {"norm", "loss"}
    assert sorted(p.name for p in (tmp_path / "seeds").iterdir()) == ["seed-1", "seed-2", "seed-3"]
    assert "± " in report.lines()[0]


def test_single_file_checkpoint_resumes(tmp_path, tiny_encoder, features):
    factory = _factory(tiny_encoder, features)
    fit(factory, _config(epochs=1), tmp_path / "combiner.safetensors")
    assert (tmp_path / "combiner.json").exists() and (tmp_path / "combiner.resume" / "state.json").exists()
    result = fit(factory, _config(epochs=2), tmp_path / "combiner.safetensors")
    assert (
        result.resumed_from_epoch == 1
        and load_checkpoint(tmp_path / "combiner.safetensors").training["epochs_done"] == 2
    )


def test_bfloat16_mixed_precision_on_cpu_trains_and_float16_is_refused(tmp_path, tiny_encoder, features, monkeypatch):
    seen_dtypes = []
    real_loss = CombinerTask.loss

    def loss(self, batch):
        linear = next(m for m in self.model.modules() if isinstance(m, torch.nn.Linear))
        handle = linear.register_forward_hook(lambda _m, _i, out: seen_dtypes.append(out.dtype))
        try:
            return real_loss(self, batch)
        finally:
            handle.remove()

    monkeypatch.setattr(CombinerTask, "loss", loss)
    result = fit(_factory(tiny_encoder, features), _config(epochs=2, dtype="bfloat16"), tmp_path / "bf16")
    assert set(seen_dtypes) == {torch.bfloat16}  # the forward ran under bfloat16 autocast
    weights = load_checkpoint(tmp_path / "bf16").tensors
    assert all(t.dtype == torch.float32 for t in weights.values())  # trained weights stay float32
    seen_dtypes.clear()
    full = fit(_factory(tiny_encoder, features), _config(epochs=2, dtype="float32"), tmp_path / "fp32")
    assert set(seen_dtypes) == {torch.float32}
    assert result.first_loss == pytest.approx(full.first_loss, abs=0.05)  # same training, lower precision
    from clipmath.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="float16"):
        fit(_factory(tiny_encoder, features), _config(epochs=1, dtype="float16"), tmp_path / "fp16")


def test_training_half_precision_weights_is_refused(tmp_path, tiny_encoder, features):
    def half_task(config):
        task = CombinerTask(tiny_encoder, config, *features)
        task.model.to(torch.bfloat16)
        return task

    with pytest.raises(TrainingError, match="held in bfloat16"):
        fit(half_task, _config(epochs=1), tmp_path / "half")
