"""Caption metrics as the COCO caption evaluation computes them: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

This runs the kept reference implementation (``pycocoevalcap``): captions are lower-cased and split by the Stanford
PTB tokenizer with punctuation removed, BLEU uses the "closest" reference length, METEOR is 1.5 (``-l en -norm``),
CIDEr is CIDEr-D with document frequencies from the references being scored. The tokenizer and METEOR are Java
programs, so a Java runtime must be on ``PATH``.

A file of predictions with references (:func:`score_caption_file`) is JSON, either a list of items or an object
mapping ids to items; each item has ``prediction`` (a string) and ``references`` or ``captions`` (a list of
strings)::

    [{"image_name": "a.jpg", "prediction": "a cat on a sofa.", "captions": ["A cat sleeps.", "..."]}, ...]

or, as every difference-captioning repository writes them, COCO-format predictions ``[{"image_id": ..., "caption":
...}]`` scored against a COCO-format reference file (``{"images": [...], "annotations": [{"image_id", "caption"}]}``,
:func:`read_coco_caption_items`); as pycocoevalcap's ``COCOEvalCap`` does, the predicted ids are scored, and each must
have references. Ids compare as strings (``256`` and ``"256"`` are one image).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clipmath.errors import CaptionError

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
REFERENCE_KEYS = ("references", "captions")


@dataclass(frozen=True)
class CaptionScores:
    """Corpus-level caption metrics as fractions (multiply by 100 for the usual table figures)."""

    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float | None  # None when METEOR was skipped
    rouge_l: float
    cider: float
    count: int

    def as_dict(self) -> dict[str, float | None]:
        """Metric name (``BLEU-4``, ``METEOR``...) to value, fractions as computed."""
        values = asdict(self)
        fields = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")
        return dict(zip(METRIC_NAMES, (values[k] for k in fields)))

    def percent(self) -> dict[str, float | None]:
        """Metric name to value in percent, as papers report them."""
        return {k: (None if v is None else 100.0 * v) for k, v in self.as_dict().items()}


@dataclass(frozen=True)
class CaptionItem:
    """One prediction with its references."""

    key: str
    prediction: str
    references: tuple[str, ...]


def caption_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]], meteor: bool = True
) -> CaptionScores:
    """Score ``predictions[i]`` against ``references[i]`` (one or more strings each) with the COCO evaluation."""
    if len(predictions) != len(references):
        raise CaptionError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise CaptionError("no captions to score")
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise CaptionError(f"prediction {i} is not a string")
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise CaptionError(f"references of item {i} must be a non-empty list of strings")
    _require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _tokenize(predictions, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    meteor_score = _meteor(gts, res) if meteor else None
    return CaptionScores(
        *(float(b) for b in bleu), meteor=meteor_score, rouge_l=float(rouge), cider=float(cider), count=len(predictions)
    )


def read_caption_file(path: str | Path) -> list[CaptionItem]:
    """Read a predictions-with-references JSON file (format in the module docstring); clear errors on bad input."""
    path = Path(path)
    data = _load_json(path, "caption file")
    if isinstance(data, dict):
        entries = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list):
        entries = [(_item_key(v, i), v) for i, v in enumerate(data)]
    else:
        raise CaptionError(f"{path}: expected a JSON list of items or an object of id -> item")
    if not entries:
        raise CaptionError(f"{path} holds no items")
    return [_parse_item(path, key, value) for key, value in entries]


def score_caption_file(path: str | Path, meteor: bool = True, references: str | Path | None = None) -> CaptionScores:
    """COCO caption metrics of a predictions file (what ``clipmath eval-captions`` reports).

    Without ``references`` the file holds predictions with their references; with a COCO-format ``references`` file
    it holds COCO-format predictions.
    """
    items = read_caption_file(path) if references is None else read_coco_caption_items(path, references)
    return caption_metrics([it.prediction for it in items], [list(it.references) for it in items], meteor=meteor)


def read_coco_references(path: str | Path) -> dict[str, list[str]]:
    """Image id (as a string) -> reference captions, from a COCO-format caption annotation file."""
    data = _load_json(Path(path), "reference file")
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise CaptionError(f"{path} is not a COCO-format reference file: it needs an 'annotations' list")
    references: dict[str, list[str]] = {}
    for i, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "image_id" not in annotation or "caption" not in annotation:
            raise CaptionError(f"{path}: annotation {i} needs 'image_id' and 'caption'")
        references.setdefault(str(annotation["image_id"]), []).append(str(annotation["caption"]))
    if not references:
        raise CaptionError(f"{path} holds no annotations")
    return references


def read_coco_predictions(path: str | Path) -> dict[str, str]:
    """Image id (as a string) -> predicted caption, from ``[{"image_id": ..., "caption": ...}, ...]``."""
    data = _load_json(Path(path), "predictions file")
    if not isinstance(data, list) or not data:
        raise CaptionError(f"{path}: COCO-format predictions are a non-empty list of {{image_id, caption}} objects")
    predictions: dict[str, str] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "image_id" not in item or not isinstance(item.get("caption"), str):
            raise CaptionError(f"{path}: item {i} needs 'image_id' and a 'caption' string")
        key = str(item["image_id"])
        if key in predictions:
            raise CaptionError(f"{path}: image {key} has more than one prediction")
        predictions[key] = item["caption"]
    return predictions


def read_coco_caption_items(predictions: str | Path, references: str | Path) -> list[CaptionItem]:
    """Pair COCO-format predictions with their references (every predicted id must have references)."""
    refs = read_coco_references(references)
    preds = read_coco_predictions(predictions)
    missing = [key for key in preds if key not in refs]
    if missing:
        raise CaptionError(
            f"{len(missing)} predicted image id(s) have no references in {references} (first: {missing[0]!r})"
        )
    return [CaptionItem(key, text, tuple(refs[key])) for key, text in preds.items()]


def write_coco_files(
    items: Sequence[CaptionItem], predictions: str | Path, references: str | Path
) -> tuple[Path, Path]:
    """Write items as COCO-format predictions and references (the files difference-captioning code exchanges)."""
    predictions, references = Path(predictions), Path(references)
    predictions.write_text(json.dumps([{"image_id": it.key, "caption": it.prediction} for it in items]))
    annotations = [
        {"image_id": it.key, "caption": ref, "id": n}
        for n, (it, ref) in enumerate((it, ref) for it in items for ref in it.references)
    ]
    images = [{"id": it.key, "filename": it.key} for it in items]
    references.write_text(json.dumps({"type": "captions", "images": images, "annotations": annotations}))
    return predictions, references


def _load_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise CaptionError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaptionError(f"{path} is not valid JSON: {exc}") from None


# ---- internals --------------------------------------------------------------------------------------------
def _item_key(value: object, index: int) -> str:
    if isinstance(value, dict):
        for name in ("image_id", "image_name", "id"):
            if name in value:
                return str(value[name])
    return str(index)


def _parse_item(path: Path, key: str, value: object) -> CaptionItem:
    where = f"{path}: item {key!r}"
    if not isinstance(value, dict):
        raise CaptionError(f"{where} is not an object with 'prediction' and 'references' (or 'captions')")
    prediction = value.get("prediction")
    if not isinstance(prediction, str):
        if "caption" in value and "image_id" in value:
            raise CaptionError(f"{path} holds COCO-format predictions: score them with a COCO-format reference file")
        raise CaptionError(f"{where} has no 'prediction' string")
    refs = next((value[k] for k in REFERENCE_KEYS if k in value), None)
    if refs is None:
        raise CaptionError(f"{where} has no 'references' (or 'captions') list")
    if isinstance(refs, str) or not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise CaptionError(f"{where}: references must be a non-empty list of strings")
    return CaptionItem(key=key, prediction=prediction, references=tuple(refs))


def _require_java() -> None:
    if shutil.which("java") is None:
        raise CaptionError(
            "caption metrics need Java (the COCO evaluation's PTB tokenizer and METEOR 1.5 are Java programs): "
            "install a Java runtime, e.g. apt-get install default-jre-headless"
        )


def _tokenize(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """PTB-tokenise (lower-case, punctuation removed) with the COCO evaluation's own tokenizer."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": p}] for i, p in enumerate(predictions)}
    tokenizer = PTBTokenizer()
    try:
        return tokenizer.tokenize(gts), tokenizer.tokenize(res)
    except OSError as exc:  # it writes a temporary file beside its jar
        raise CaptionError(f"the PTB tokenizer could not run: {exc}") from None


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    except ValueError as exc:  # the Java process died and printed nothing parseable
        raise CaptionError(f"METEOR (Java) failed: {exc}") from None
    finally:
        del scorer
    return float(score)
