"""What an evaluation produced: result rows (:class:`MethodScore`) and the :class:`EvalReport` with the data of its
table, JSON and notes (rendering is the front end's job: nothing here prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class MethodScore:
    """One result row: a method (at one λ for SIMAT) on one dataset; ``metrics`` empty on test splits."""

    method: str
    dataset: str
    split: str
    num_queries: int
    metrics: dict[str, float]
    lam: float | None = None
    checkpoint: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        """The method as shown in a table: ``delta (λ=2)``."""
        return self.method if self.lam is None else f"{self.method} (λ={self.lam:g})"


@dataclass
class EvalReport:
    """Everything one evaluation produced (:meth:`to_dict` is what ``clipmath eval --json`` prints)."""

    model: str
    pretrained: bool
    benchmark: str
    split: str
    preprocessing: str
    datasets: list[Any]
    rows: list[MethodScore] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rankings: dict[tuple[str, str], Any] = field(default_factory=dict)
    store: Path | None = None
    gallery_images: int = 0
    encoded_images: int = 0
    limit: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    extra_notes: list[str] = field(default_factory=list)

    @property
    def caption_orders(self) -> str | None:
        """FashionIQ's caption orders (``both``/``one``), ``None`` elsewhere."""
        return self.facts.get("caption_orders")

    @property
    def oracle(self) -> str | None:
        """SIMAT's oracle label, ``None`` elsewhere."""
        return self.facts.get("oracle")

    @property
    def has_ground_truth(self) -> bool:
        """True unless a dataset says it has no targets (``has_targets``; a test split)."""
        return all(getattr(d, "has_targets", True) for d in self.datasets)

    @property
    def num_queries(self) -> int:
        return sum(len(d.queries) for d in self.datasets)

    def methods(self) -> list[str]:
        """Methods that produced results, in order."""
        return list(dict.fromkeys(row.method for row in self.rows))

    def row(self, method: str, dataset: str | None = None, lam: float | None = None) -> MethodScore:
        """The result row of ``method`` (on ``dataset``, at ``lam``); ``KeyError`` if there is none."""
        for row in self.rows:
            if row.method == method and dataset in (None, row.dataset) and (lam is None or row.lam == lam):
                return row
        raise KeyError(f"no result for method {method!r}" + (f" on {dataset}" if dataset else ""))

    def short_name(self, dataset_name: str) -> str:
        """A dataset's name without its benchmark prefix (``fashioniq-dress`` -> ``dress``)."""
        return dataset_name.removeprefix(f"{self.benchmark}-")

    def notes(self) -> list[str]:
        """What a reader must know to interpret the numbers."""
        notes = []
        if not self.pretrained:
            notes.append("the model has RANDOM WEIGHTS: these numbers test the plumbing and are not quality figures")
        if self.limit is not None:
            notes.append(f"only the first {self.limit} queries of each dataset: not comparable with published numbers")
        if not self.has_ground_truth:
            notes.append(f"{self.benchmark} {self.split} has no ground truth: rankings are for the evaluation server")
        notes += self.extra_notes
        notes += [f"skipped {method}: {reason}" for method, reason in self.skipped.items()]
        return notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pretrained": self.pretrained,
            "benchmark": self.benchmark,
            "split": self.split,
            "preprocessing": self.preprocessing,
            "queries": self.num_queries,
            "limit": self.limit,
            "caption_orders": None,
            "oracle": None,
            **self.facts,
            "cache": str(self.store) if self.store else None,
            "gallery_images": self.gallery_images,
            "encoded_images": self.encoded_images,
            "seconds": self.seconds,
            "results": [
                {
                    "method": r.method,
                    "lam": r.lam,
                    "checkpoint": r.checkpoint,
                    "dataset": r.dataset,
                    "split": r.split,
                    "queries": r.num_queries,
                    "metrics": r.metrics,
                    "seconds": r.seconds,
                }
                for r in self.rows
            ],
            "skipped": dict(self.skipped),
            "notes": self.notes(),
        }

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Column names and rows of the summary table: one row per method (and λ), metrics side by side."""
        if not self.rows:
            return ["method"], []
        if not self.has_ground_truth:
            return ["method", "queries ranked"], [[r.label, str(r.num_queries)] for r in self.rows]
        datasets = list(dict.fromkeys(r.dataset for r in self.rows))
        several = len(datasets) > 1
        columns: list[tuple[str, str]] = []
        for name in datasets:
            first = next(r for r in self.rows if r.dataset == name)
            columns += [(name, key) for key in first.metrics if "[" not in key]
        header = ["method"] + [f"{self.short_name(name)} {key}" if several else key for name, key in columns]
        labels = list(dict.fromkeys(r.label for r in self.rows))
        by_cell = {(r.label, r.dataset): r.metrics for r in self.rows}
        body = [[label] + [_fmt(by_cell.get((label, name), {}).get(key)) for name, key in columns] for label in labels]
        return header, body

    def flat_metrics(self) -> dict[str, float]:
        """One method's metrics in one flat dict (``average/R@10``, ``λ=2/score``, ``R@1``), for training logs."""
        lams = {r.lam for r in self.rows}
        datasets = {r.dataset for r in self.rows}
        out = {}
        for r in self.rows:
            prefix = ""
            if len(datasets) > 1 or r.dataset != self.benchmark:
                prefix += f"{self.short_name(r.dataset)}/"
            if len(lams) > 1 and r.lam is not None:
                prefix = f"λ={r.lam:g}/" + prefix
            out.update({f"{prefix}{key}": value for key, value in r.metrics.items() if "[" not in key})
        return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
