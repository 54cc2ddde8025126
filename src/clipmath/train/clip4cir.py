"""CLIP4Cir's two training stages on (reference, caption, target) triplets.

Stage 1 (:class:`FinetuneTask`, ``clipmath train finetune``): fine-tune the encoder towers so that
``normalize(img(reference)) + normalize(text(caption))`` lands near ``img(target)``: a batch contrastive loss over the
targets in the batch. The result is a new model folder (use it with ``--model FOLDER``, e.g. with ``--method sum``,
and index the gallery with it).

Stage 2 (:class:`CombinerTask`, ``clipmath train combiner``): the Combiner network on frozen features. The features
are computed once (:class:`FeatureCache`), so training runs on cached tensors and never touches the encoder.

In both losses, other triplets in the batch that share the target image are not counted as negatives.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clipmath.compose import get_composer, method_spec
from clipmath.compose.base import Composer, open_image
from clipmath.compose.combiner import KIND as COMBINER_KIND
from clipmath.compose.combiner import Combiner, CombinerComposer
from clipmath.encoders.base import Encoder
from clipmath.encoders.pipeline import ImagePipeline
from clipmath.errors import ComposeError, DatasetError
from clipmath.train.config import CombinerConfig, FinetuneConfig
from clipmath.train.data import Triplet
from clipmath.train.features import FeatureCache
from clipmath.train.loop import TrainingError, TrainingTask

FINETUNE_KIND = "finetune"


def target_contrastive_loss(
    queries: torch.Tensor, targets: torch.Tensor, target_ids: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """Cross-entropy of each query against the batch's targets; duplicates of its own target are masked out."""
    logits = logit_scale * F.normalize(queries.float(), dim=-1) @ F.normalize(targets.float(), dim=-1).T
    same = target_ids[:, None] == target_ids[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _index(paths: Sequence[Path]) -> tuple[list[Path], torch.Tensor]:
    """Unique paths (in first-seen order) and each input's row among them."""
    rows: dict[Path, int] = {}
    for path in paths:
        rows.setdefault(Path(path), len(rows))
    return list(rows), torch.tensor([rows[Path(p)] for p in paths])


# ---- stage 2: the Combiner -----------------------------------------------------------------------------------------
class CombinerTask(TrainingTask):
    kind = COMBINER_KIND

    def __init__(
        self,
        encoder: Encoder,
        config: CombinerConfig,
        reference_features: torch.Tensor,
        caption_features: torch.Tensor,
        target_features: torch.Tensor,
        target_ids: torch.Tensor,
    ) -> None:
        super().__init__(encoder, config)
        self.config: CombinerConfig = config
        device = encoder.device
        self.references = reference_features.to(device)
        self.captions = caption_features.to(device)
        self.targets = target_features.to(device)
        self.target_ids = target_ids.to(device)
        self.model = Combiner(encoder.dim, config.projection_dim, config.hidden_dim, config.dropout).to(device)

    def num_examples(self) -> int:
        return len(self.references)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
        order = torch.randperm(len(self.references), generator=generator).to(self.references.device)
        for rows in order.split(max(1, self.config.batch_size)):
            if len(rows) > 1:
                yield len(rows), rows

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        queries = self.model(self.references[rows], self.captions[rows])
        return target_contrastive_loss(queries, self.targets[rows], self.target_ids[rows], self.config.logit_scale)

    def composer(self) -> CombinerComposer:
        return method_spec("combiner").adopt(CombinerComposer(self.model))

    def checkpoint_config(self) -> dict[str, Any]:
        return {**self.config.to_dict(), **self.model.dims}


def combiner_task_factory(
    encoder: Encoder, triplets: Sequence[Triplet], cache: FeatureCache | None = None
) -> Callable[[CombinerConfig], CombinerTask]:
    """Pre-compute the triplets' features once; the factory builds a fresh Combiner task per config (seed)."""
    cache = cache or FeatureCache(encoder)
    images, rows = _index([p for t in triplets for p in (t.reference, t.target)])
    features = cache.images(images)
    references, targets = features[rows[0::2]], features[rows[1::2]]
    captions = cache.texts([t.caption for t in triplets])
    target_ids = rows[1::2]
    return lambda config: CombinerTask(encoder, config, references, captions, targets, target_ids)


#: Prepared crops kept between epochs when fine-tuning (uint8: 150 kB each at 224 px).
CROP_CACHE_SIZE = 4096


# ---- stage 1: fine-tuning the encoder -------------------------------------------------------------------------------
class FinetuneTask(TrainingTask):
    kind = FINETUNE_KIND

    def __init__(self, encoder: Encoder, config: FinetuneConfig, triplets: Sequence[Triplet]) -> None:
        super().__init__(encoder, config)
        self.config: FinetuneConfig = config
        if not hasattr(encoder, "save_pretrained"):
            raise TrainingError(
                f"fine-tuning needs a CLIP model loaded through transformers; "
                f"{encoder.info.model_id} ({encoder.info.backend}) cannot be saved as one"
            )
        towers = {"both": ("image", "text"), "image": ("image",), "text": ("text",)}.get(config.towers)
        if towers is None:
            raise TrainingError(f"'towers' must be both, image or text, not {config.towers!r}")
        if getattr(encoder, "dtype", torch.float32) != torch.float32:
            encoder.model.float()  # type: ignore[attr-defined] - trained weights stay float32; autocast for speed
            encoder.dtype = torch.float32  # type: ignore[attr-defined]
        modules = encoder.trainable_modules()
        for name, module in modules.items():
            module.requires_grad_(name in towers)
        self.model = nn.ModuleDict({name: modules[name] for name in towers})
        if config.gradient_checkpointing:
            encoder.enable_gradient_checkpointing()  # type: ignore[attr-defined]
        self.triplets = list(triplets)
        self.images, rows = _index([p for t in self.triplets for p in (t.reference, t.target)])
        self.reference_rows, self.target_rows = rows[0::2], rows[1::2]
        self._pixels = functools.lru_cache(maxsize=2048)(self._load_pixels)
        self._crops: OrderedDict[int, np.ndarray] = OrderedDict()  # prepared uint8 crops, most recent last

    def _load_pixels(self, row: int) -> torch.Tensor:
        try:
            picture = open_image(self.images[row])
        except ComposeError as exc:
            raise DatasetError(str(exc)) from None
        return self.encoder.load_images([picture])[0]

    def pixels(self, rows: torch.Tensor) -> torch.Tensor:
        """The model's pixel batch of ``rows``: uint8 crops prepared in worker processes (and cached, bounded),
        normalised on the device."""
        spec = self.encoder.pipeline_spec()
        if spec is None:
            return torch.stack([self._pixels(int(r)) for r in rows])
        wanted = [int(r) for r in rows]
        missing = [r for r in dict.fromkeys(wanted) if r not in self._crops]
        if missing:
            batch = next(ImagePipeline(spec).batches([self.images[r] for r in missing], len(missing)))
            if batch.failed:
                index, reason = batch.failed[0]
                raise DatasetError(f"cannot read image {self.images[missing[index]]}: {reason}")
            self._crops.update(zip(missing, batch.pixels))
        for row in wanted:
            self._crops.move_to_end(row)
        crops = np.stack([self._crops[r] for r in wanted])
        while len(self._crops) > CROP_CACHE_SIZE:
            self._crops.popitem(last=False)
        return self.encoder.pixels_from_uint8(crops)

    def num_examples(self) -> int:
        return len(self.triplets)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
        order = torch.randperm(len(self.triplets), generator=generator)
        for rows in order.split(max(1, self.config.batch_size)):
            if len(rows) > 1:
                yield len(rows), rows

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        references = F.normalize(encoder.image_features(self.pixels(self.reference_rows[rows])).float(), dim=-1)
        texts = encoder.text_features(encoder.tokenize([self.triplets[int(i)].caption for i in rows]))
        queries = references + F.normalize(texts.float(), dim=-1)
        targets = encoder.image_features(self.pixels(self.target_rows[rows]))
        ids = self.target_rows[rows].to(queries.device)
        return target_contrastive_loss(queries, targets, ids, self.config.logit_scale)

    def train_mode(self, training: bool) -> None:
        self.encoder.model.train(training)  # type: ignore[attr-defined]

    def composer(self) -> Composer:
        return get_composer("sum")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}  # the weights are the transformers model folder written by write_artifacts

    def write_artifacts(self, folder: Path) -> None:
        from clipmath.encoders.identity import RANDOM_MARKER

        self.encoder.save_pretrained(folder)  # type: ignore[attr-defined]
        if not self.encoder.info.pretrained:
            note = {"note": f"fine-tuned from the random {self.encoder.info.model_id}"}
            (folder / RANDOM_MARKER).write_text(json.dumps(note))

    def restore_artifacts(self, folder: Path) -> None:
        from safetensors.torch import load_file

        files = sorted(folder.glob("model*.safetensors"))
        if not files:
            raise TrainingError(f"{folder} holds no model weights to resume from; set 'resume' off")
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(str(file)))
        model = self.encoder.model  # type: ignore[attr-defined]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise TrainingError(f"{folder}: saved weights do not fit the model; set 'resume' off")
