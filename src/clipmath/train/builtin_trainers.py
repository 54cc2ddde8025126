"""The built-in trainers, registered in :data:`clipmath.train.TRAINERS` on its first use: the data each one reads
(an inputs dataclass) and how it runs (a function of a :class:`~clipmath.train.specs.TrainJob`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipmath.errors import ClipmathError
from clipmath.options import setting
from clipmath.train.caption_lm import CaptionLMConfig
from clipmath.train.config import AdapterConfig, CombinerConfig, FinetuneConfig, LincirConfig, OtiConfig, PhiConfig
from clipmath.train.decap import DecapConfig
from clipmath.train.idc import IdcAdaptConfig, IdcCaptionConfig
from clipmath.train.run import benchmark_validator, fit_job, validator
from clipmath.train.specs import TRAINERS, TrainerSpec, TrainJob, TrainReport

_IMAGES_ROOT = "Folder that relative image paths in the file are under (default: the file's folder)."


# ---- inputs -------------------------------------------------------------------------------------------------
@dataclass
class TripletInputs:
    """Training triplets (reference image, relative caption, target image)."""

    triplets: Path | None = setting(
        None, "Training triplets: JSON list of {reference, caption, target}, JSON lines, or TSV "
        "reference<TAB>caption<TAB>target.", required=True,
    )  # fmt: skip
    images: Path | None = setting(None, _IMAGES_ROOT)


@dataclass
class CaptionedImagesInputs:
    """Image–caption pairs: a folder and its captions file, or COCO's captions."""

    images: Path | None = setting(
        None, "Folder of training images (with 'captions'), or COCO image folder (with 'coco'; default ROOT/<split>)."
    )
    captions: Path | None = setting(
        None, 'Captions of the images: JSON {"file.jpg": [captions]} or TSV file<TAB>caption.'
    )
    coco: Path | None = setting(
        None, "COCO captions instead: a root holding annotations/captions_<split>.json, or that file."
    )
    coco_split: str | None = setting(None, "COCO split, e.g. train2017.")
    val_captions: Path | None = setting(
        None, "Held-out captions file (JSON or TSV): caption→image Recall@K after every epoch (images: 'val_images')."
    )


@dataclass
class InversionInputs:
    """Images to invert, and the concept vocabulary of the regulariser."""

    images: Path | None = setting(
        None, "Folder of images to invert (searched recursively), e.g. a benchmark's reference images.", required=True
    )
    concepts: Path | None = setting(
        None, "Concept vocabulary: JSON {concept: [phrases that contain it]} or text, one concept per line "
        "(default: a small built-in list).",
    )  # fmt: skip


@dataclass
class PhiInputs:
    """The OTI tokens phi learns to predict."""

    oti: Path | None = setting(
        None, "OTI checkpoint (`train oti`) whose tokens phi learns to predict from the image features.", required=True
    )
    concepts: Path | None = setting(None, "Concept vocabulary for the regulariser (default: the one the OTI run used).")


@dataclass
class ChangePairInputs:
    """A difference-captioning benchmark in its release layout (or a generated change set)."""

    path: Path | None = setting(None, "Dataset folder.", required=True)
    dataset: str = setting("clevr-change", "The difference-captioning benchmark: clevr-change or spot-the-diff.")


@dataclass
class CaptionTextInputs:
    """Caption sentences."""

    texts: Path | None = setting(
        None, "Caption sentences: one per line, or JSON (list / items with 'captions').", required=True
    )


# ---- runs ---------------------------------------------------------------------------------------------------
def _features(job: TrainJob) -> Any:
    from clipmath.train.features import FeatureCache

    return FeatureCache(job.encoder, job.run.cache, progress=job.run.progress)


def run_adapter(job: TrainJob) -> TrainReport:
    from clipmath.compose import METHODS
    from clipmath.train.adapter import adapter_task_factory
    from clipmath.train.data import read_captions, read_coco_captions
    from clipmath.train.validate import CaptionValidator

    data = job.inputs
    if (data.coco is None) == (data.captions is None):
        raise ClipmathError("give either 'images' + 'captions', or 'coco'")
    if data.captions is not None and data.images is None:
        raise ClipmathError("'captions' needs 'images'")
    pairs = (
        read_coco_captions(data.coco, data.images, data.coco_split)
        if data.coco
        else read_captions(data.images, data.captions)
    )
    validate = benchmark_validator(job, METHODS.get("adapted-delta").needs, "adapter", data.val_captions is not None)
    if data.val_captions is not None:
        if job.validation.val_images is None:
            raise ClipmathError("'val_captions' needs 'val_images'")
        validate = CaptionValidator(job.encoder, read_captions(job.validation.val_images, data.val_captions))
    return fit_job(job, adapter_task_factory(job.encoder, pairs, _features(job)), validate)


def run_finetune(job: TrainJob) -> TrainReport:
    from clipmath.train.clip4cir import FinetuneTask
    from clipmath.train.data import read_triplets

    if job.run.output.suffix == ".safetensors":
        raise ClipmathError("a fine-tuned model is a folder: 'output' must be a folder path")
    if job.run.seeds and len(job.run.seeds) > 1:
        raise ClipmathError("fine-tuning changes the model in place: one seed per run")
    data = read_triplets(job.inputs.triplets, job.inputs.images)
    validate = validator(job, "finetune", reencode=True)
    return fit_job(job, lambda config: FinetuneTask(job.encoder, config, data), validate)


def run_combiner(job: TrainJob) -> TrainReport:
    from clipmath.train.clip4cir import combiner_task_factory
    from clipmath.train.data import read_triplets

    data = read_triplets(job.inputs.triplets, job.inputs.images)
    features = _features(job)
    validate = validator(job, "combiner", cache=features)
    return fit_job(job, combiner_task_factory(job.encoder, data, features), validate)


def run_oti(job: TrainJob) -> TrainReport:
    from clipmath.compose.searle import ConceptVocabulary
    from clipmath.train.data import image_files
    from clipmath.train.searle import run_oti as invert

    files = image_files(job.inputs.images)
    vocabulary = ConceptVocabulary.load(job.inputs.concepts) if job.config.lambda_reg else None
    validate = validator(job, "oti")
    result = invert(job.encoder, files, job.config, job.run.output, vocabulary, _features(job), validate,
                    job.run.resume)  # fmt: skip
    payload = {
        "model": job.encoder.info.label(),
        "checkpoint": str(result.checkpoint),
        "images": result.images,
        "inverted": result.inverted,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
        "images_per_s": result.examples_per_second,
        "metrics": result.metrics,
    }
    lines = [
        f"inverted {result.inverted} image(s) ({result.images} in the checkpoint) at "
        f"{result.examples_per_second:.2f} images/s; loss {result.first_loss:.4f} → {result.last_loss:.4f}"
    ]
    if result.metrics:
        lines.append("  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    lines.append(f"checkpoint: {result.checkpoint}")
    return TrainReport(payload, lines)


def run_phi(job: TrainJob) -> TrainReport:
    from clipmath.compose.searle import ConceptVocabulary
    from clipmath.train.searle import phi_task_factory

    vocabulary = ConceptVocabulary.load(job.inputs.concepts) if job.inputs.concepts else None
    factory = phi_task_factory(job.encoder, job.inputs.oti, vocabulary)
    return fit_job(job, factory, validator(job, "phi"))


def run_lincir(job: TrainJob) -> TrainReport:
    from clipmath.data.captions import read_caption_texts
    from clipmath.train.lincir import LincirTask

    captions = read_caption_texts(job.inputs.texts)
    return fit_job(job, lambda config: LincirTask(job.encoder, config, captions), validator(job, "lincir"))


def _change_pairs(inputs: ChangePairInputs, split: str) -> list:
    from clipmath.eval.benchmarks import BENCHMARKS

    spec = BENCHMARKS.get(inputs.dataset)
    if "pair" not in spec.query_fields:
        having = ", ".join(s.name for s in BENCHMARKS.list() if "pair" in s.query_fields)
        raise ClipmathError(f"'dataset' is a difference-captioning benchmark ({having}), not {inputs.dataset!r}")
    return spec.load(inputs.path, split)[0].pairs


def run_idc_adapt(job: TrainJob) -> TrainReport:
    from clipmath.train import idc

    train, val = (_change_pairs(job.inputs, split) for split in ("train", "val"))
    return fit_job(job, idc.adapt_task_factory(job.encoder, train), idc.retrieval_validator(val) if val else None)


def run_idc_caption(job: TrainJob) -> TrainReport:
    from clipmath.train import idc

    train, val = (_change_pairs(job.inputs, split) for split in ("train", "val"))
    return fit_job(job, idc.caption_task_factory(job.encoder, train), idc.caption_validator(val) if val else None)


def run_caption_lm(job: TrainJob) -> TrainReport:
    from clipmath.data.captions import read_caption_texts
    from clipmath.train.caption_lm import train_caption_lm

    sentences = read_caption_texts(job.inputs.texts)
    job.config.extra = {"texts": str(job.inputs.texts), "count": len(sentences)}
    result = train_caption_lm(sentences, job.run.output, job.config, resume=job.run.resume)
    history = [{k: v for k, v in record.items() if k != "step_losses"} for record in result.history]
    lines = [f"adapting {job.config.base} on {len(sentences)} caption sentences from {job.inputs.texts}"]
    lines += [f"epoch {r['epoch']}: loss {r['loss']:.4f} ({r['steps']} steps)" for r in history]
    lines.append(f"adapted LM: {result.output} (use it as the language model: {result.output})")
    return TrainReport({"output": str(result.output), "history": history}, lines)


def run_decap(job: TrainJob) -> TrainReport:
    from clipmath.caption.memory import read_corpus
    from clipmath.train.decap import DecapTask, default_validator

    texts, source = read_corpus(job.inputs.texts), str(job.inputs.texts)
    return fit_job(job, lambda config: DecapTask(job.encoder, config, texts, source), default_validator(job.config))


# ---- registrations ------------------------------------------------------------------------------------------
for _spec in (
    TrainerSpec("adapter", "SIMAT adaptation heads for the adapted-delta method: linear image and text heads on frozen "
             "features, trained on image–caption pairs with a symmetric contrastive loss", CaptionedImagesInputs,
             AdapterConfig, run_adapter,
             help="  clipmath train adapter --coco data/coco --coco-split train2017 -o runs/heads"),
    TrainerSpec("finetune", "CLIP4Cir stage 1: fine-tune the towers so that img(reference) + text(caption) finds "
             "img(target); writes a model folder (index with --model OUTPUT)", TripletInputs,
             FinetuneConfig, run_finetune,
             help="  clipmath train finetune --triplets train.json -o runs/clip-ft --epochs 5"),
    TrainerSpec("combiner", "CLIP4Cir stage 2: the Combiner network for the combiner method, on cached features of a "
             "frozen encoder", TripletInputs, CombinerConfig, run_combiner,
             help="  clipmath train combiner --triplets train.json -o runs/combiner --val-triplets val.json"),
    TrainerSpec("oti", "SEARLE optimisation-based textual inversion: one pseudo-word token per image, for the oti "
             "method and as the teacher of phi", InversionInputs, OtiConfig, run_oti,
             help="  clipmath train oti --images data/CIRR/dev -o runs/oti --concepts concepts.json",
             seeds=False),
    TrainerSpec("phi", "SEARLE's textual-inversion network phi for the searle method: image feature → pseudo-word "
             "token, distilled from OTI tokens", PhiInputs, PhiConfig, run_phi,
             help="  clipmath train phi --oti runs/oti -o runs/phi --epochs 50 --val-triplets val.json"),
    TrainerSpec("lincir", "LinCIR: phi for the lincir method trained on captions only (text feature → pseudo-word "
             "token; self-masking and noise)", CaptionTextInputs, LincirConfig, run_lincir,
             help="  clipmath train lincir --texts examples/caption-corpus/coco_captions.txt -o runs/lincir"),
    TrainerSpec("idc-adapt", "CLIP4IDC stage 1: align pair embeddings with difference captions", ChangePairInputs,
             IdcAdaptConfig, run_idc_adapt,
             help="  clipmath train idc-adapt --path data/clevr_change -o runs/idc-adapt", validates=False),
    TrainerSpec("idc-caption", "CLIP4IDC stage 2: the difference-caption decoder (from an idc-adapt checkpoint)",
             ChangePairInputs, IdcCaptionConfig, run_idc_caption,
             help="  clipmath train idc-caption --path data/clevr_change -o runs/idc-caption "
             "--init-from runs/idc-adapt",
             validates=False),
    TrainerSpec("caption-lm", "adapt a causal LM to caption text (SimCTG objective) for the caption decoders",
             CaptionTextInputs, CaptionLMConfig, run_caption_lm,
             help="  clipmath train caption-lm --texts examples/caption-corpus/coco_captions.txt -o runs/caption-lm",
             validates=False, seeds=False, encoder=False),
    TrainerSpec("decap", "DeCap: a caption decoder trained on text alone, for the decap caption decoder (validates "
             "on held-out captions when Java is installed)", CaptionTextInputs, DecapConfig, run_decap,
             help="  clipmath train decap --texts examples/caption-corpus/coco_captions.txt -o runs/decap",
             validates=False),
):  # fmt: skip
    TRAINERS.register(_spec.name, _spec)
