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
