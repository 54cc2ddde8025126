"""Benchmark evaluation end to end: a model, compose methods and a benchmark folder in, a table of metrics out.

    >>> from clipmath.encoders import load_encoder
    >>> from clipmath.eval.harness import EvalConfig, evaluate, load_benchmark
    >>> encoder = load_encoder("openai/clip-vit-base-patch32", preprocessing="targetpad")
    >>> datasets = load_benchmark("cirr", "/data/CIRR", "val")
    >>> report = evaluate(datasets, encoder, {"sum": None, "text": None, "combiner": "runs/combiner"})
    >>> report.rows[0].metrics["R@1"]

What :func:`evaluate` does:

1. **Gallery features, cached.** The gallery images of the split are indexed into a clipmath store
   (:class:`clipmath.store.Gallery`), keyed by model, benchmark, split, preprocessing and dataset folder, under
   ``cache_root`` (default ``<clipmath cache>/eval``): ``<model>/<benchmark>-<split>-<preprocessing>-<folder hash>``.
   Items are the images' paths relative to the dataset folder, so a second run (any method, any λ) encodes no
   image at all, and an interrupted first run resumes.
2. **Queries.** Every benchmark's reference image is a gallery member, so references reuse the stored vectors
   (never encoded twice). CIR queries carry the relative caption as ``text``; FashionIQ by default averages the
   query features of both caption orders, as SEARLE does (``EvalConfig.caption_orders``); SIMAT queries carry the
   source and target words with each λ of ``EvalConfig.lams``.
3. **Methods.** Each method is a compose method by name (learned ones with their checkpoint). A method whose inputs
   the benchmark lacks (``delta`` on CIRR needs words; ``sum`` on SIMAT needs a caption) is skipped with a note.
4. **Scoring** with :mod:`clipmath.eval.cir` (FashionIQ per category + average, CIRR, CIRCO) or
   :mod:`clipmath.eval.simat`; test splits are ranked only (no ground truth) and their rankings kept for
   :func:`write_submissions`.

:class:`BenchmarkValidator` wraps the same steps as the per-epoch validation hook of ``clipmath train``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
from tqdm.auto import tqdm

from clipmath.compose import Composer, CompositionQuery, get_composer, learned_methods, zero_shot_methods
from clipmath.data import FASHIONIQ_CATEGORIES, load_cir_benchmark, load_fashioniq, load_simat
from clipmath.data.base import CIRDataset
from clipmath.data.simat import DOMAINS as SIMAT_DOMAINS
from clipmath.data.simat import SimatDataset
from clipmath.encoders.base import Encoder
from clipmath.errors import ClipmathError, DatasetError, SubmissionError
from clipmath.eval.cir import DEFAULT_DEPTH, CIRRanking, cir_metrics, fashioniq_average, rank_cir
from clipmath.eval.ranking import EmbeddingScores
from clipmath.eval.simat import SimatOracle, retrieve_simat, simat_score
from clipmath.eval.submissions import write_circo_submission, write_cirr_submissions

Dataset = Union[CIRDataset, SimatDataset]

BENCHMARKS = ("fashioniq", "cirr", "circo", "simat")
#: Split used when none is given.
DEFAULT_SPLITS = {"fashioniq": "val", "cirr": "val", "circo": "val", "simat": "test"}
#: Method evaluated when none is given.
DEFAULT_METHODS = {"fashioniq": "sum", "cirr": "sum", "circo": "sum", "simat": "delta"}
#: Query fields each benchmark provides (``lam`` comes from the config, not the data).
QUERY_FIELDS = {
    "fashioniq": ("reference", "text"),
    "cirr": ("reference", "text"),
    "circo": ("reference", "text"),
    "simat": ("reference", "source", "target", "lam"),
}
#: The headline metric of a validation run (what ``clipmath train --val-dataset`` summarises across seeds).
MONITOR = {"fashioniq": "average/R@10", "cirr": "Avg", "circo": "mAP@10", "simat": "score"}
_FIELD_NAMES = {"reference": "a reference image", "text": "a caption", "source": "a source word",
                "target": "a target word", "terms": "an expression"}  # fmt: skip


@dataclass
class EvalConfig:
    """How to run an evaluation (the benchmark and methods are arguments of :func:`evaluate`).

    ``lams``: SIMAT's λ values (methods that use λ get one result row each). ``limit``: only the first N queries of
    each dataset (a quick check; such numbers are not comparable with published ones). ``caption_orders``:
    FashionIQ queries as SEARLE builds them (``both``: the query features of ``"c0 and c1"`` and ``"c1 and c0"``
    averaged) or as CLIP4Cir does (``one``). ``oracle``: SIMAT's judge (default: ground-truth labels).
    ``reencode``: encode the gallery in memory at every call instead of caching it (while the encoder itself is
    being fine-tuned, a cache keyed by its name would be stale).
    """

    lams: tuple[float, ...] = (1.0,)
    limit: int | None = None
    caption_orders: str = "both"
    oracle: SimatOracle | None = None
    batch_size: int = 64
    depth: int = DEFAULT_DEPTH
    progress: bool = True
    reencode: bool = False

    def __post_init__(self) -> None:
        if self.caption_orders not in ("both", "one"):
            raise ClipmathError(f"caption_orders is 'both' or 'one', not {self.caption_orders!r}")
        if not self.lams:
            raise ClipmathError("give at least one λ value")
        if self.limit is not None and self.limit < 1:
            raise ClipmathError("limit must be at least 1")


# ---- loading -------------------------------------------------------------------------------------------------
def load_benchmark(
    benchmark: str, root: str | Path, split: str | None = None, category: str | None = None, check_images: bool = True
) -> list[Dataset]:
    """The datasets of one benchmark split: one for CIRR, CIRCO and SIMAT, one per category for FashionIQ."""
    name = benchmark.lower()
    if name not in BENCHMARKS:
        raise DatasetError(f"unknown benchmark '{benchmark}': use one of {', '.join(BENCHMARKS)}")
    split = split or DEFAULT_SPLITS[name]
    if category is not None and name != "fashioniq":
        raise DatasetError("--category applies to FashionIQ only")
    if name == "simat":
        if split not in SIMAT_DOMAINS:
            raise DatasetError(f"unknown SIMAT split '{split}': use dev or test")
        return [load_simat(root, split, check_images)]
    if name == "fashioniq" and category is not None:
        if category not in FASHIONIQ_CATEGORIES:
            raise DatasetError(f"unknown FashionIQ category '{category}': use {', '.join(FASHIONIQ_CATEGORIES)}")
        return [load_fashioniq(root, category, split, check_images)]
    return list(load_cir_benchmark(name, root, split, check_images))


def limit_queries(dataset: Dataset, limit: int | None) -> Dataset:
    """``dataset`` with only its first ``limit`` queries (the gallery is unchanged)."""
    if limit is None or limit >= len(dataset.queries):
        return dataset
    return replace(dataset, queries=list(dataset.queries[:limit]))


def _benchmark_of(datasets: Sequence[Dataset]) -> tuple[str, str]:
    if not datasets:
        raise ClipmathError("no dataset to evaluate")
    names = {(d.benchmark, d.split) for d in datasets}
    if len(names) != 1:
        raise ClipmathError(f"evaluate one benchmark split at a time, got {sorted(names)}")
    return names.pop()


# ---- gallery features ----------------------------------------------------------------------------------------
def default_cache_root() -> Path:
    """Where evaluation feature stores live by default: ``<clipmath cache>/eval``."""
    from clipmath.paths import cache_dir

    return cache_dir() / "eval"


def model_slug(model_id: str) -> str:
    """A folder name for a model id (``openai/clip-vit-base-patch32`` → ``openai--clip-vit-base-patch32``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id.replace("/", "--")).strip("-.")
    return slug[:80] or "model"


def feature_store_path(cache_root: str | Path | None, encoder: Encoder, datasets: Sequence[Dataset]) -> Path:
    """The store caching ``datasets``' gallery features for ``encoder`` (see the module docstring for the key)."""
    benchmark, split = _benchmark_of(datasets)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    folder = hashlib.sha256(str(Path(datasets[0].root).resolve()).encode()).hexdigest()[:8]
    return root / model_slug(encoder.info.model_id) / f"{benchmark}-{split}-{encoder.transform.key}-{folder}"


def _relative_ids(dataset: Dataset) -> dict[str, str]:
    """Gallery id -> the image's path relative to the dataset folder (the store's item id)."""
    out = {}
    for image_id in dataset.gallery_ids:
        path = dataset.image_path(image_id)
        try:
            out[image_id] = path.relative_to(dataset.root).as_posix()
        except ValueError:
            raise DatasetError(f"{dataset.name}: image {path} is outside the dataset folder {dataset.root}") from None
    return out


@dataclass
class GalleryFeatures:
    """Per dataset (by name), its gallery vectors in ``gallery_ids`` order; how many images had to be encoded."""

    vectors: dict[str, np.ndarray]
    store: Path | None
    encoded_images: int
    gallery_images: int


def gallery_features(
    datasets: Sequence[Dataset],
    encoder: Encoder,
    cache_root: str | Path | None = None,
    config: EvalConfig | None = None,
) -> GalleryFeatures:
    """Gallery vectors of every dataset, from the feature store (encoding only images not stored yet)."""
    from clipmath.store import Gallery, IndexConfig, index_folder

    config = config or EvalConfig()
    relative = {d.name: _relative_ids(d) for d in datasets}
    files = list(dict.fromkeys(path for ids in relative.values() for path in ids.values()))
    if config.reencode:
        return _encode_in_memory(datasets, encoder, relative, files, config)
    store = feature_store_path(cache_root, encoder, datasets)
    index_config = IndexConfig(batch_size=config.batch_size)
    report = index_folder(store, datasets[0].root, encoder, index_config, files=files, progress=config.progress)
    with Gallery.open(store) as gallery:
        snapshot = gallery.snapshot()
    row_of = {item_id: row for row, item_id in enumerate(snapshot.ids)}
    missing = [f for f in files if f not in row_of]
    if missing:
        reasons = dict(report.bad)
        raise DatasetError(
            f"{len(missing)} gallery image(s) could not be read, e.g. {missing[0]}: "
            f"{reasons.get(missing[0], 'unreadable')}; fix or re-download them"
        )
    vectors = {
        d.name: np.asarray(snapshot.vectors[[row_of[relative[d.name][i]] for i in d.gallery_ids]], dtype=np.float32)
        for d in datasets
    }
    return GalleryFeatures(vectors, store, report.added, len(files))


def _encode_in_memory(
    datasets: Sequence[Dataset], encoder: Encoder, relative: dict, files: list[str], config: EvalConfig
) -> GalleryFeatures:
    from clipmath.store import ImageDecodeError, decode_image

    root = Path(datasets[0].root)
    chunks = []
    step = max(1, config.batch_size)
    for start in tqdm(range(0, len(files), step), desc="encoding gallery", unit="batch", disable=not config.progress):
        images = []
        for name in files[start : start + step]:
            try:
                images.append(decode_image(root / name))
            except (FileNotFoundError, ImageDecodeError) as exc:
                raise DatasetError(f"gallery image {name} could not be read: {exc}") from None
        chunks.append(encoder.encode_images(images, batch_size=step))
    matrix = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    row_of = {name: row for row, name in enumerate(files)}
    vectors = {d.name: matrix[[row_of[relative[d.name][i]] for i in d.gallery_ids]] for d in datasets}
    return GalleryFeatures(vectors, None, len(files), len(files))


# ---- methods -------------------------------------------------------------------------------------------------
def missing_inputs(composer: Composer, benchmark: str) -> str | None:
    """Why ``composer`` cannot run on ``benchmark``'s queries, or ``None`` if it can."""
    lacking = [f for f in composer.needs if f not in QUERY_FIELDS[benchmark] and f != "lam"]
    if not lacking:
        return None
    return f"needs {', '.join(_FIELD_NAMES.get(f, f) for f in lacking)}, which {benchmark} queries do not have"


def resolve_methods(
    selection: Sequence[str], checkpoints: Mapping[str, str] | None = None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Method names (``all`` expands to every method) → ``({method: checkpoint}, {skipped method: reason})``.

    With ``all``, learned methods without a checkpoint are skipped; a learned method named explicitly without one
    is an error (raised when it is loaded).
    """
    checkpoints = dict(checkpoints or {})
    known = zero_shot_methods() + learned_methods()
    unknown = [c for c in checkpoints if c not in learned_methods()]
    if unknown:
        raise ClipmathError(f"--checkpoint for '{unknown[0]}': only {', '.join(learned_methods())} take checkpoints")
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in selection:
        if name == "all":
            for method in known:
                if method in learned_methods() and method not in checkpoints:
                    skipped[method] = f"learned method: give --checkpoint {method}=PATH to include it"
                elif method not in names:
                    names.append(method)
        elif name not in known:
            raise ClipmathError(f"unknown method '{name}'; available: {', '.join(known)}")
        elif name not in names:
            names.append(name)
    for method in checkpoints:
        if method not in names:
            raise ClipmathError(f"--checkpoint {method}=...: method '{method}' is not selected")
    return {name: checkpoints.get(name) for name in names}, {k: v for k, v in skipped.items() if k not in names}


class _TextMemo:
    """The encoder, remembering text embeddings per string (benchmark queries repeat words and captions)."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._texts: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            for text, vector in zip(new, self._encoder.encode_texts(new, batch_size=batch_size, progress=progress)):
                self._texts[text] = vector
        if not texts:
            return np.zeros((0, self._encoder.dim), dtype=np.float32)
        return np.stack([self._texts[t] for t in texts])


# ---- results -------------------------------------------------------------------------------------------------
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
    datasets: list[Dataset]
    rows: list[MethodScore] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rankings: dict[tuple[str, str], CIRRanking] = field(default_factory=dict)
    store: Path | None = None
    gallery_images: int = 0
    encoded_images: int = 0
    limit: int | None = None
    caption_orders: str | None = None
    oracle: str | None = None
    seconds: float = 0.0

    @property
    def has_ground_truth(self) -> bool:
        return all(_has_targets(d) for d in self.datasets)

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

    def notes(self) -> list[str]:
        """What a reader must know to interpret the numbers."""
        notes = []
        if not self.pretrained:
            notes.append("the model has RANDOM WEIGHTS: these numbers test the plumbing and are not quality figures")
        if self.limit is not None:
            notes.append(f"only the first {self.limit} queries of each dataset: not comparable with published numbers")
        if not self.has_ground_truth:
            notes.append(f"{self.benchmark} {self.split} has no ground truth: rankings are for the evaluation server")
        if self.oracle:
            notes.append(f"SIMAT oracle: {self.oracle}")
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
            "caption_orders": self.caption_orders,
            "oracle": self.oracle,
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
        header = ["method"] + [f"{_short(name)} {key}" if several else key for name, key in columns]
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
            if self.benchmark == "fashioniq" or len(datasets) > 1:
                prefix += f"{_short(r.dataset)}/"
            if len(lams) > 1 and r.lam is not None:
                prefix = f"λ={r.lam:g}/" + prefix
            out.update({f"{prefix}{key}": value for key, value in r.metrics.items() if "[" not in key})
        return out


def _short(dataset_name: str) -> str:
    return dataset_name.removeprefix("fashioniq-")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _has_targets(dataset: Dataset) -> bool:
    return isinstance(dataset, SimatDataset) or dataset.has_targets


# ---- scoring -------------------------------------------------------------------------------------------------
@dataclass
class PreparedBenchmark:
    """A benchmark split with its gallery features, ready to score any number of composers."""

    benchmark: str
    split: str
    datasets: list[Dataset]
    features: GalleryFeatures


def prepare(
    datasets: Dataset | Sequence[Dataset],
    encoder: Encoder,
    cache_root: str | Path | None = None,
    config: EvalConfig | None = None,
) -> PreparedBenchmark:
    """Apply ``config.limit`` and compute (or load) the gallery features."""
    config = config or EvalConfig()
    items = [datasets] if isinstance(datasets, (CIRDataset, SimatDataset)) else list(datasets)
    benchmark, split = _benchmark_of(items)
    items = [limit_queries(d, config.limit) for d in items]
    return PreparedBenchmark(benchmark, split, items, gallery_features(items, encoder, cache_root, config))


def _compose(composer: Composer, encoder: Any, queries: list[CompositionQuery], config: EvalConfig, desc: str):
    chunk = 1024
    starts = range(0, len(queries), chunk)
    shown = config.progress and len(starts) > 1
    parts = [
        composer.compose(encoder, queries[start : start + chunk], config.batch_size)
        for start in tqdm(starts, desc=desc, unit="block", leave=False, disable=not shown)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def _cir_query_vectors(
    dataset: CIRDataset, gallery: np.ndarray, composer: Composer, encoder: Any, config: EvalConfig
) -> np.ndarray:
    row = dataset.gallery_row

    def queries(reversed_order: bool) -> list[CompositionQuery]:
        return [
            CompositionQuery(
                reference=gallery[row[q.reference_id]],
                text=q.extra["caption_reversed"] if reversed_order else q.caption,
                reference_id=q.reference_id,
            )
            for q in dataset.queries
        ]

    vectors = _compose(composer, encoder, queries(False), config, f"composing {composer.name} ({dataset.name})")
    both = config.caption_orders == "both" and all("caption_reversed" in q.extra for q in dataset.queries)
    if both and dataset.queries:
        reverse = _compose(composer, encoder, queries(True), config, f"composing {composer.name} (reversed)")
        vectors = _normalise(_normalise(vectors) + _normalise(reverse))
    return vectors


def _show_ranking(dataset: Dataset, config: EvalConfig) -> bool:
    """A ranking progress bar only where ranking takes a while (e.g. CIRCO's 123k-image gallery)."""
    return config.progress and len(dataset.queries) * len(dataset.gallery_ids) > 50_000_000


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def score_composer(
    prepared: PreparedBenchmark,
    composer: Composer,
    encoder: Encoder,
    config: EvalConfig | None = None,
    method: str | None = None,
    checkpoint: str | None = None,
    texts: _TextMemo | None = None,
) -> tuple[list[MethodScore], dict[tuple[str, str], CIRRanking]]:
    """Result rows of one composer on a prepared benchmark, and the CIR rankings (by ``(method, dataset)``).

    ``texts``: text embeddings already computed by this encoder (shared by the methods of one evaluation).
    """
    config = config or EvalConfig()
    method = method or composer.name
    reason = missing_inputs(composer, prepared.benchmark)
    if reason:
        raise ClipmathError(f"method {method} cannot run on {prepared.benchmark}: it {reason}")
    memo = texts if texts is not None else _TextMemo(encoder)
    rows: list[MethodScore] = []
    rankings: dict[tuple[str, str], CIRRanking] = {}
    for dataset in prepared.datasets:
        gallery = prepared.features.vectors[dataset.name]
        searched = composer.transform_gallery(gallery) if composer.transforms_gallery else gallery
        if isinstance(dataset, SimatDataset):
            lams: Sequence[float | None] = config.lams if "lam" in composer.needs else [None]
            for lam in lams:
                started = time.perf_counter()
                row = dataset.gallery_row
                queries = [
                    CompositionQuery(
                        reference=gallery[row[q.source_id]],
                        source=q.source_word,
                        target=q.target_word,
                        lam=1.0 if lam is None else lam,
                        reference_id=q.source_id,
                    )
                    for q in dataset.queries
                ]
                vectors = _compose(composer, memo, queries, config, f"composing {method}")
                retrieved = retrieve_simat(dataset, EmbeddingScores(vectors, searched), _show_ranking(dataset, config))
                result = simat_score(dataset, retrieved, config.oracle)
                metrics = {"score": result.score, **result.per_field}
                seconds = time.perf_counter() - started
                rows.append(
                    MethodScore(method, "simat", dataset.split, len(dataset), metrics, lam, checkpoint, seconds)
                )
            continue
        started = time.perf_counter()
        vectors = _cir_query_vectors(dataset, gallery, composer, memo, config)
        ranking = rank_cir(dataset, EmbeddingScores(vectors, searched), config.depth, _show_ranking(dataset, config))
        rankings[(method, dataset.name)] = ranking
        metrics = cir_metrics(dataset, ranking).metrics if dataset.has_targets else {}
        seconds = time.perf_counter() - started
        rows.append(MethodScore(method, dataset.name, dataset.split, len(dataset), metrics, None, checkpoint, seconds))
    if prepared.benchmark == "fashioniq" and len(rows) > 1 and all(r.metrics for r in rows):
        from clipmath.eval.cir import EvalResult

        average = fashioniq_average(
            [EvalResult("fashioniq", r.dataset, r.split, r.num_queries, r.metrics) for r in rows]
        )
        seconds = sum(r.seconds for r in rows)
        rows.append(
            MethodScore(method, "fashioniq-average", average.split, average.num_queries, average.metrics,
                        None, checkpoint, seconds)
        )  # fmt: skip
    return rows, rankings


def evaluate(
    datasets: Dataset | Sequence[Dataset],
    encoder: Encoder,
    methods: Mapping[str, str | None] | Sequence[str],
    cache_root: str | Path | None = None,
    config: EvalConfig | None = None,
    skipped: Mapping[str, str] | None = None,
) -> EvalReport:
    """Evaluate every method (name → checkpoint, ``None`` for zero-shot ones) on one benchmark split.

    The gallery is encoded once (or read from the feature store) and shared by all methods. Methods the benchmark
    cannot feed are listed in ``report.skipped`` with the reason; ``skipped`` adds reasons found by the caller.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    method_map = dict(methods) if isinstance(methods, Mapping) else {name: None for name in methods}
    prepared = prepare(datasets, encoder, cache_root, config)
    benchmark = prepared.benchmark
    report = EvalReport(
        model=encoder.info.label(),
        pretrained=encoder.info.pretrained,
        benchmark=benchmark,
        split=prepared.split,
        preprocessing=encoder.transform.key,
        datasets=prepared.datasets,
        skipped=dict(skipped or {}),
        store=prepared.features.store,
        gallery_images=prepared.features.gallery_images,
        encoded_images=prepared.features.encoded_images,
        limit=config.limit,
        caption_orders=config.caption_orders if benchmark == "fashioniq" else None,
        oracle=(config.oracle.label if config.oracle else "ground-truth labels") if benchmark == "simat" else None,
    )
    texts = _TextMemo(encoder)  # methods share caption and word embeddings
    for name, checkpoint in method_map.items():
        composer = get_composer(name, encoder, checkpoint)
        reason = missing_inputs(composer, benchmark)
        if reason:
            report.skipped[name] = reason
            continue
        rows, rankings = score_composer(prepared, composer, encoder, config, name, checkpoint, texts)
        report.rows += rows
        report.rankings.update(rankings)
    report.seconds = time.perf_counter() - started
    return report


# ---- submissions ---------------------------------------------------------------------------------------------
def write_submissions(report: EvalReport, output: str | Path) -> list[Path]:
    """Write the validated server file(s) of every method in ``report`` (CIRR and CIRCO only).

    CIRCO: ``output`` itself; CIRR: ``<stem>_cirr_recall.json`` and ``<stem>_cirr_recall_subset.json`` beside it.
    With several methods each file name gets ``-<method>`` after the stem.
    """
    if report.benchmark not in ("cirr", "circo"):
        raise SubmissionError(f"{report.benchmark} has no evaluation server; only CIRR and CIRCO take submissions")
    if report.limit is not None:
        raise SubmissionError("a submission needs every query: run without --limit")
    output = Path(output)
    methods = report.methods()
    if not methods:
        raise SubmissionError("no method produced a ranking, so there is nothing to submit")
    dataset = report.datasets[0]
    written: list[Path] = []
    for method in methods:
        stem = output.stem if len(methods) == 1 else f"{output.stem}-{method}"
        ranking = report.rankings[(method, dataset.name)]
        if report.benchmark == "cirr":
            written += write_cirr_submissions(dataset, ranking, output.parent, stem)  # type: ignore[arg-type]
        else:
            written.append(write_circo_submission(dataset, ranking, output.with_name(stem + output.suffix)))  # type: ignore[arg-type]
    return written


# ---- training hook -------------------------------------------------------------------------------------------
class BenchmarkValidator:
    """``validate(composer) -> metrics`` for :func:`clipmath.train.loop.fit`: a benchmark's validation split.

    Gallery features come from the evaluation feature store (computed on the first call), or are encoded afresh
    at every call with ``config.reencode`` (while the encoder is fine-tuned). ``monitor`` names the headline metric.
    """

    def __init__(
        self,
        datasets: Dataset | Sequence[Dataset],
        encoder: Encoder,
        cache_root: str | Path | None = None,
        config: EvalConfig | None = None,
    ) -> None:
        self.datasets = [datasets] if isinstance(datasets, (CIRDataset, SimatDataset)) else list(datasets)
        self.benchmark, self.split = _benchmark_of(self.datasets)
        if not all(_has_targets(d) for d in self.datasets):
            raise DatasetError(f"{self.benchmark} {self.split} has no ground truth: validate on a val split")
        self.encoder = encoder
        self.cache_root = cache_root
        self.config = config or EvalConfig(progress=False)
        self.monitor = MONITOR[self.benchmark]
        if self.benchmark == "fashioniq" and len(self.datasets) == 1:
            self.monitor = f"{_short(self.datasets[0].name)}/R@10"
        if self.benchmark == "simat" and len(self.config.lams) > 1:
            self.monitor = f"λ={self.config.lams[0]:g}/score"
        self._prepared: PreparedBenchmark | None = None

    def check_inputs(self, needs: Sequence[str], method: str) -> None:
        """Raise :class:`ClipmathError` now if a method needing ``needs`` cannot be scored on this benchmark."""
        lacking = [f for f in needs if f not in QUERY_FIELDS[self.benchmark] and f != "lam"]
        if lacking:
            raise ClipmathError(
                f"{method} cannot be validated on {self.benchmark}: it needs "
                f"{', '.join(_FIELD_NAMES.get(f, f) for f in lacking)}, which {self.benchmark} queries do not have"
            )

    def prepared(self) -> PreparedBenchmark:
        if self._prepared is None or self.config.reencode:
            self._prepared = prepare(self.datasets, self.encoder, self.cache_root, self.config)
        return self._prepared

    def __call__(self, composer: Composer) -> dict[str, float]:
        prepared = self.prepared()
        rows, _ = score_composer(prepared, composer, self.encoder, self.config)
        report = EvalReport(
            self.encoder.info.label(), self.encoder.info.pretrained, self.benchmark, self.split,
            self.encoder.transform.key, prepared.datasets, rows,
        )  # fmt: skip
        return report.flat_metrics()
