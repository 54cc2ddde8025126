"""Unit checks of the training pieces: each SIMAT head sees only its own modality, losses mask duplicate targets,
gradient checkpointing changes nothing but memory, phi's regulariser trains phi and never the encoder, and OTI
prompts and pseudo-phrases are well formed."""

from __future__ import annotations

import pytest
import torch

from clipmath.compose.searle import ConceptBank, ConceptVocabulary, fill_prompt
from clipmath.encoders import load_encoder
from clipmath.errors import ComposeError
from clipmath.train.adapter import AdapterTask
from clipmath.train.clip4cir import FinetuneTask, target_contrastive_loss
from clipmath.train.config import AdapterConfig, FinetuneConfig, PhiConfig
from clipmath.train.loop import TrainingError
from clipmath.train.searle import PhiTask
from clipmath.train.synthetic import make_shapes_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_head_is_trained_on_its_own_modality(tiny_encoder):
    # image features live in the first 16 dimensions, caption features in the last 16
    images = torch.zeros(6, 32)
    images[:, :16] = torch.randn(6, 16)
    texts = torch.zeros(6, 32)
    texts[:, 16:] = torch.randn(6, 16)
    task = AdapterTask(tiny_encoder, AdapterConfig(batch_size=6), images, texts, torch.arange(6))
    _, batch = next(task.batches(torch.Generator().manual_seed(0)))
    task.loss(batch).backward()
    # a weight gradient is (output gradient)ᵀ · input, so it is zero on the dimensions the head never saw
    assert (
        task.model.image.weight.grad[:, 16:].abs().max() == 0 and task.model.image.weight.grad[:, :16].abs().max() > 0
    )
    assert task.model.text.weight.grad[:, :16].abs().max() == 0 and task.model.text.weight.grad[:, 16:].abs().max() > 0


def test_duplicate_targets_are_not_negatives():
    queries = torch.eye(3)
    targets = torch.eye(3)[[0, 0, 2]]  # queries 0 and 1 share a target image
    masked = target_contrastive_loss(queries, targets, torch.tensor([5, 5, 7]), 10.0)
    unmasked = target_contrastive_loss(queries, targets, torch.tensor([5, 6, 7]), 10.0)
    assert masked < unmasked


def test_gradient_checkpointing_gives_the_same_step(tmp_path):
    shapes = make_shapes_dataset(tmp_path, shapes=2, colours=2, instances=1, size=32)
    losses, grads = [], []
    for checkpointing in (False, True):
        encoder = load_encoder("tiny-random-clip")
        task = FinetuneTask(encoder, FinetuneConfig(gradient_checkpointing=checkpointing), shapes.triplets())
        task.train_mode(True)
        loss = task.loss(torch.arange(len(shapes.triplets())))
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(encoder.model.text_projection.weight.grad.clone())
        assert any(getattr(m, "gradient_checkpointing", False) for m in encoder.model.modules()) == checkpointing
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_phi_regulariser_trains_phi_not_the_encoder(tiny_encoder):
    vocabulary = ConceptVocabulary({"circle": ["a red circle", "a circle on grey"], "square": ["a blue square"]})
    bank = ConceptBank.build(tiny_encoder, vocabulary)
    features = torch.randn(4, 32)
    tokens = torch.randn(4, tiny_encoder.token_embedding_table().embedding_dim)
    config = PhiConfig(batch_size=4, lambda_distil=0.0, lambda_reg=1.0, top_k=2)
    task = PhiTask(tiny_encoder, config, features, tokens, bank)
    encoder_params = [p for m in tiny_encoder.trainable_modules().values() for p in m.parameters()]
    for p in encoder_params:
        p.grad = None  # the shared encoder may carry gradients from other tests
    _, rows = next(task.batches(torch.Generator().manual_seed(0)))
    task.loss(rows).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters() if p.dim() > 1)
    assert all(p.grad is None for p in encoder_params)
    assert all(p.requires_grad for p in encoder_params)  # frozen only while the loss is computed


def test_prompts_hold_one_placeholder():
    assert fill_prompt("a photo of $ that {caption}", " is red ") == "a photo of $ that is red"
    with pytest.raises(ComposeError, match="may not contain"):
        fill_prompt("a photo of $ that {caption}", "costs $5")
    with pytest.raises(ComposeError, match="exactly one"):
        fill_prompt("a photo that {caption}", "is red")


def test_oti_resumes_after_the_last_saved_batch(tmp_path, tiny_encoder, monkeypatch):
    import clipmath.train.searle as searle
    from clipmath.compose.checkpoint import load_checkpoint
    from clipmath.train.config import OtiConfig
    from clipmath.train.searle import run_oti

    shapes = make_shapes_dataset(tmp_path / "img", shapes=3, colours=2, instances=1, size=32)
    images = shapes.images()
    config = OtiConfig(steps=2, batch_size=2, save_every=1, lambda_reg=0.0, progress=False)
    straight = run_oti(tiny_encoder, images, config, tmp_path / "straight")

    real, calls = searle.invert, []

    def crash_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(searle, "invert", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_oti(tiny_encoder, images, config, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed").training["images_done"] == 4
    monkeypatch.setattr(searle, "invert", real)
    resumed = run_oti(tiny_encoder, images, config, tmp_path / "resumed")
    assert resumed.inverted == 2 and resumed.images == 6
    assert torch.equal(load_checkpoint(tmp_path / "resumed").tensors["tokens"], straight.tokens)
    with pytest.raises(TrainingError, match="other images"):
        run_oti(tiny_encoder, list(reversed(images)), config, tmp_path / "resumed")
