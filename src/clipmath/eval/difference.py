"""Scores of difference captions, reported as RobustChangeCaptioning and CLIP4IDC report them.

BLEU-1..4, METEOR, ROUGE-L and CIDEr (the COCO caption evaluation, :mod:`clipmath.caption.metrics`) over all pairs,
over change and no-change pairs separately, and per change type (CLEVR-Change: color, material, add, drop, move and
the distractors). As in RobustChangeCaptioning each group is scored on its own (CIDEr's document frequencies come
from the group's references), so a group's figure is not a slice of the overall one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from clipmath.caption.metrics import METRIC_NAMES, CaptionItem, CaptionScores, caption_metrics, write_coco_files
from clipmath.data.change_pairs import ChangePair
from clipmath.errors import CaptionError


@dataclass
class DifferenceReport:
    """Scores per group: ``overall``, ``change``/``no-change`` (when both occur) and each change type."""

    groups: dict[str, CaptionScores] = field(default_factory=dict)

    @property
    def overall(self) -> CaptionScores:
        return self.groups["overall"]

    def rows(self) -> list[dict[str, object]]:
        """One row per group: name, pair count and each metric in percent (as papers print them)."""
        return [{"group": name, "pairs": s.count, **s.percent()} for name, s in self.groups.items()]

    def markdown(self) -> str:
        header = "| group | pairs | " + " | ".join(METRIC_NAMES) + " |"
        lines = [header, "| --- | ---: |" + " ---: |" * len(METRIC_NAMES)]
        for row in self.rows():
            values = ["–" if row[m] is None else f"{row[m]:.2f}" for m in METRIC_NAMES]
            lines.append(f"| {row['group']} | {row['pairs']} | " + " | ".join(values) + " |")
        return "\n".join(lines)


def score_difference_captions(
    predictions: Mapping[str, str], pairs: Sequence[ChangePair], meteor: bool = True, by_type: bool = True
) -> DifferenceReport:
    """Score ``predictions`` (pair id -> caption) against the pairs' references, overall and per group."""
    missing = [p.pair_id for p in pairs if p.pair_id not in predictions]
    if missing:
        raise CaptionError(f"{len(missing)} pair(s) have no prediction (first: {missing[0]})")
    if not pairs:
        raise CaptionError("no pairs to score")
    groups: dict[str, list[ChangePair]] = {"overall": list(pairs)}
    changed = [p for p in pairs if p.changed]
    unchanged = [p for p in pairs if not p.changed]
    if changed and unchanged:
        groups["change"], groups["no-change"] = changed, unchanged
    if by_type:
        for change_type in sorted({p.change_type for p in pairs if p.change_type}):
            groups[change_type] = [p for p in pairs if p.change_type == change_type]
    report = DifferenceReport()
    for name, members in groups.items():
        report.groups[name] = caption_metrics(
            [predictions[p.pair_id] for p in members], [list(p.captions) for p in members], meteor=meteor
        )
    return report


def caption_pairs(
    describe: Callable[[Sequence[ChangePair]], list[str]], pairs: Sequence[ChangePair], batch_size: int = 32
) -> dict[str, str]:
    """Pair id -> caption, from any ``describe(pairs) -> captions`` (a trained captioner, a baseline)."""
    out: dict[str, str] = {}
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start : start + batch_size])
        out.update(zip((p.pair_id for p in chunk), describe(chunk)))
    return out


def most_frequent_caption(pairs: Sequence[ChangePair]) -> str:
    """The constant baseline: the caption that occurs most often among the (training) pairs' references."""
    from collections import Counter

    counts = Counter(c for p in pairs for c in p.captions)
    if not counts:
        raise CaptionError("no captions to count")
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def write_predictions(predictions: Mapping[str, str], pairs: Sequence[ChangePair], folder) -> tuple:
    """Write COCO-format predictions and references (``predictions.json``, ``references.json``) into ``folder``."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = [CaptionItem(p.pair_id, predictions[p.pair_id], tuple(p.captions)) for p in pairs]
    return write_coco_files(items, folder / "predictions.json", folder / "references.json")


# ---- `clipmath eval --dataset clevr-change|spot-the-diff` -----------------------------------------------------------
class DifferenceCaptionProtocol:
    """The benchmark protocol of the difference-captioning benchmarks (:mod:`clipmath.eval.protocol`): the method is a
    trained captioner (``clip4idc`` with a checkpoint), the result rows hold caption metrics per group
    (``overall/CIDEr``, ``change/CIDEr``, ``color/CIDEr`` ...). No gallery features are computed."""

    LEARNED = ("clip4idc",)

    def prepare(self, spec, datasets, encoder, cache_root, config):
        from dataclasses import replace

        from clipmath.eval.protocol import PreparedBenchmark

        limit = getattr(config, "limit", None)
        items = [replace(d, pairs=list(d.pairs[:limit])) if limit else d for d in datasets]
        return PreparedBenchmark(spec.name, items[0].split, items, None, spec)

    def method_names(self) -> tuple[list[str], list[str]]:
        return [], list(self.LEARNED)

    def load_method(self, name: str, encoder, checkpoint: str | None):
        from clipmath.caption.difference import TrainedDifferenceCaptioner

        if checkpoint is None:
            raise CaptionError(f"method {name} needs a checkpoint (made by `clipmath train idc-caption`)")
        return TrainedDifferenceCaptioner.load(checkpoint, encoder)

    def missing_inputs(self, spec, method) -> str | None:
        return None

    def has_ground_truth(self, dataset) -> bool:
        return bool(dataset.pairs) and all(p.captions for p in dataset.pairs)

    def describe(self, spec, config) -> tuple[dict, list[str]]:
        return {}, ["caption metrics in percent; groups scored separately (RobustChangeCaptioning's breakdown)"]

    def score(self, prepared, method, run):
        import time

        from clipmath.caption.difference import open_pair
        from clipmath.eval.protocol import MethodOutcome
        from clipmath.eval.report import MethodScore

        outcome = MethodOutcome()
        for dataset in prepared.datasets:
            started = time.perf_counter()

            def describe(chunk, captioner=method):
                opened = [open_pair(p.before, p.after) for p in chunk]
                return captioner.describe([b for b, _ in opened], [a for _, a in opened])

            predictions = caption_pairs(describe, dataset.pairs)
            report = score_difference_captions(predictions, dataset.pairs, meteor=True)
            metrics = {
                f"{group}/{name}": value
                for group, scores in report.groups.items()
                for name, value in scores.percent().items()
                if value is not None
            }
            outcome.rows.append(MethodScore(run.name, dataset.name, dataset.split, len(dataset.pairs), metrics,
                                            None, run.checkpoint, time.perf_counter() - started))  # fmt: skip
        return outcome


def load_clevr_change_benchmark(root, split: str, variant, check_images: bool) -> list:
    from clipmath.data.clevr_change import load_clevr_change

    return [load_clevr_change(root, split, check_images=check_images)]


def load_spot_the_diff_benchmark(root, split: str, variant, check_images: bool) -> list:
    from clipmath.data.spot_the_diff import load_spot_the_diff

    return [load_spot_the_diff(root, split, check_images=check_images)]


def register_benchmarks(registry) -> None:
    """Add ``clevr-change`` and ``spot-the-diff`` to a benchmark registry (:data:`clipmath.eval.BENCHMARKS`)."""
    from clipmath.eval.benchmarks import BenchmarkSpec

    here = "clipmath.eval.difference"
    for name, title, description, loader in (
        ("clevr-change", "CLEVR-Change", "image pairs with one semantic change or a distractor; caption metrics "
         "overall, change / no-change and per change type", f"{here}:load_clevr_change_benchmark"),
        ("spot-the-diff", "Spot-the-Diff", "street-camera image pairs and their difference sentences; caption "
         "metrics", f"{here}:load_spot_the_diff_benchmark"),
    ):  # fmt: skip
        if name in registry:
            continue
        registry.register(name, BenchmarkSpec(
            name=name, title=title, description=description, splits=("train", "val", "test"), default_split="test",
            validation_split="val", default_method="clip4idc", monitor="overall/CIDEr", query_fields=("pair",),
            loader=loader, protocol=f"{here}:DifferenceCaptionProtocol",
        ))  # fmt: skip
