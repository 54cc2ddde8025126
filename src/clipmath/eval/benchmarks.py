"""The benchmark registry: one :class:`BenchmarkSpec` per benchmark, in :data:`BENCHMARKS`.

    >>> from clipmath.eval import BENCHMARKS, load_benchmark
    >>> spec = BENCHMARKS.get("cirr")
    >>> spec.default_split, spec.default_method, spec.monitor, spec.query_fields
    ('val', 'sum', 'Avg', ('reference', 'text'))
    >>> datasets = load_benchmark("fashioniq-dress", "/data/FashionIQ")      # a FashionIQ category

A spec carries every fact the front ends and the runner need: splits, defaults, the headline metric a training
run monitors, the query fields it provides (so a method's ``needs`` can be checked before anything is encoded),
whether λ applies, whether a test server takes submission files, how to load a split (``loader``, a
``"module:function"`` imported on first use) and how to score it (``protocol``, a
:class:`~clipmath.eval.protocol.BenchmarkProtocol`, also lazy). Adding a benchmark is one registration::

    BENCHMARKS.register("toy", BenchmarkSpec(
        name="toy", title="Toy", description="...", splits=("val",), default_split="val",
        default_method="sum", monitor="R@1", query_fields=("reference", "text"),
        loader="my_package.toy:load_toy",                 # (root, split, variant, check_images) -> [dataset]
        protocol="clipmath.eval.scoring:RETRIEVAL",       # or your own BenchmarkProtocol (e.g. a caption scorer)
    ))

Domain rules live here, worded by field, so every front end gets them: :meth:`BenchmarkSpec.check_options`
("'lams' (λ values) apply to SIMAT only", "no 'submission' file for FashionIQ: only CIRR and CIRCO have a
test server to take one").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipmath.errors import DatasetError, SubmissionError
from clipmath.registry import Registry, import_ref

#: Recall@K of a composed-retrieval benchmark whose spec names none.
DEFAULT_RECALL_KS = (1, 5, 10, 50)

#: How the query fields a method may need are worded in messages.
FIELD_NAMES = {"reference": "a reference image", "text": "a caption", "source": "a source word",
               "target": "a target word", "terms": "an expression", "lam": "a λ value"}  # fmt: skip


class BenchmarkError(DatasetError):
    """An unknown benchmark, or an option the benchmark does not take."""


def _resolve(value: Any) -> Any:
    return import_ref(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class SubmissionFormat:
    """A test server's prediction files: ``writer(dataset, ranking, output, stem) -> [paths]`` and
    ``validator(path, dataset, allow_reference) -> kind``, each a callable or a lazy ``"module:function"``."""

    server: str
    writer: str | Callable[..., list[Path]]
    validator: str | Callable[..., str]

    def write(self, dataset: Any, ranking: Any, output: Path, stem: str) -> list[Path]:
        return list(_resolve(self.writer)(dataset, ranking, output, stem))

    def validate_file(self, path: str | Path, dataset: Any, allow_reference: bool = False) -> str:
        return _resolve(self.validator)(path, dataset, allow_reference)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything clipmath knows about one benchmark (see the module docstring for registering one).

    ``title``: the name as papers print it. ``splits``: what ``loader`` accepts (``split_aliases`` map other
    spellings); ``default_split``: evaluated when none is given; ``validation_split``: what ``clipmath train``
    validates on (needs ground truth). ``default_method``: the method evaluated when none is given. ``monitor``:
    the headline metric of a validation run, as :meth:`EvalReport.flat_metrics` names it. ``query_fields``: what
    its queries provide (``reference``, ``text``, ``source``, ``target``...); ``takes_lam``: whether λ sweeps
    apply. ``variants``: sub-benchmarks loadable alone (FashionIQ's categories: ``fashioniq-dress`` or
    ``fashioniq:dress``), named ``variant_name`` in messages. ``submission``: the test-server format, if any.
    ``oracles``: the judges a front end may choose by name (``{name: factory(root) -> judge}``, each a callable or
    a lazy ``"module:function"`` given the benchmark folder; the first is the default), for benchmarks whose score
    depends on one (SIMAT: ``labels`` or ``oscar``).
    ``loader(root, split, variant, check_images) -> [datasets]`` and ``protocol`` (a
    :class:`~clipmath.eval.protocol.BenchmarkProtocol`, or a class of one) may be lazy ``"module:attr"`` strings.
    """

    name: str
    title: str
    description: str
    splits: tuple[str, ...]
    default_split: str
    default_method: str
    monitor: str
    query_fields: tuple[str, ...]
    loader: str | Callable[..., Sequence[Any]]
    protocol: Any
    validation_split: str | None = None
    split_aliases: dict[str, str] = field(default_factory=dict)
    takes_lam: bool = False
    variants: tuple[str, ...] = ()
    variant_name: str = "category"
    submission: SubmissionFormat | None = None
    oracles: dict[str, str | Callable[[Path], Any]] = field(default_factory=dict)
    #: composed retrieval: the metric groups reported (names in ``clipmath.eval.cir.METRIC_SETS``) and Recall@K
    metric_sets: tuple[str, ...] = ("recall",)
    recall_ks: tuple[int, ...] = DEFAULT_RECALL_KS
    #: the queries carry a second caption (``caption_reversed``), scored in both orders (FashionIQ)
    two_captions: bool = False

    # -- loading ---------------------------------------------------------------------------------------------------
    def load(
        self, root: str | Path, split: str | None = None, variant: str | None = None, check_images: bool = True
    ) -> list[Any]:
        """The datasets of one split (one per variant when it has variants and none is chosen)."""
        if variant is not None and variant not in self.variants:
            raise BenchmarkError(self._variant_problem(variant))
        datasets = list(_resolve(self.loader)(Path(root), split or self.default_split, variant, check_images))
        if not datasets:
            raise BenchmarkError(f"{self.title} {split or self.default_split}: the loader returned no dataset")
        return datasets

    def get_protocol(self) -> Any:
        """The scoring protocol (imported on first use)."""
        protocol = _resolve(self.protocol)
        return protocol() if isinstance(protocol, type) else protocol

    # -- facts -----------------------------------------------------------------------------------------------------
    def lacking(self, needs: Sequence[str]) -> list[str]:
        """The fields of ``needs`` this benchmark's queries lack (λ comes from the config where it applies)."""
        return [f for f in needs if f not in self.query_fields and f != "lam"]

    def missing_inputs(self, needs: Sequence[str]) -> str | None:
        """Why a method needing ``needs`` cannot run here (``"needs a source word, which cirr queries do not
        have"``), or ``None`` if it can."""
        lacking = self.lacking(needs)
        if not lacking:
            return None
        return f"needs {', '.join(FIELD_NAMES.get(f, f) for f in lacking)}, which {self.name} queries do not have"

    def check_options(
        self, lams: Sequence[float] | None = None, submission: bool = False, limit: int | None = None,
        variant: str | None = None,
    ) -> None:  # fmt: skip
        """Raise :class:`BenchmarkError` (naming the field) for options this benchmark does not take.

        ``lams``: λ values given explicitly; ``submission``: a test-server file is wanted; ``limit``: a query
        limit; ``variant``: a sub-benchmark (e.g. a FashionIQ category).
        """
        if lams and not self.takes_lam:
            takers = " and ".join(s.title for s in BENCHMARKS.list() if s.takes_lam) or "no benchmark"
            raise BenchmarkError(f"'lams' (λ values) apply to {takers} only, not {self.title}")
        if submission:
            check_submission(self, limit)
        if variant is not None:
            if not self.variants:
                having = ", ".join(s.title for s in BENCHMARKS.list() if s.variants) or "no benchmark"
                raise BenchmarkError(f"a {self.variant_name} applies to {having} only, not {self.title}")
            if variant not in self.variants:
                raise BenchmarkError(self._variant_problem(variant))

    def make_oracle(self, name: str | None, root: str | Path) -> Any:
        """The judge called ``name``, built from the benchmark folder ``root``; ``None`` (the default judge) for
        ``None``. Raises :class:`BenchmarkError` naming the field for a name this benchmark does not have."""
        if name is None:
            return None
        if not self.oracles:
            having = " and ".join(s.title for s in BENCHMARKS.list() if s.oracles) or "no benchmark"
            raise BenchmarkError(f"an 'oracle' applies to {having} only, not {self.title}")
        if name not in self.oracles:
            raise BenchmarkError(f"unknown {self.title} oracle {name!r}: use {', '.join(self.oracles)}")
        return _resolve(self.oracles[name])(Path(root))

    def summary(self) -> dict[str, Any]:
        """The facts a listing shows (``clipmath benchmarks``), JSON-ready."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "splits": list(self.splits),
            "default_split": self.default_split,
            "validation_split": self.default_for_validation(),
            "default_method": self.default_method,
            "monitor": self.monitor,
            "query_fields": list(self.query_fields),
            "variants": list(self.variants),
            "takes_lam": self.takes_lam,
            "oracles": list(self.oracles),
            "submission_server": self.submission.server if self.submission else None,
        }

    def _variant_problem(self, variant: str) -> str:
        if not self.variants:
            return f"{self.title} has no {self.variant_name}s"
        return f"unknown {self.title} {self.variant_name} '{variant}': use {', '.join(self.variants)}"

    def default_for_validation(self) -> str:
        return self.validation_split or self.default_split


def check_submission(spec: BenchmarkSpec, limit: int | None = None) -> SubmissionFormat:
    """The spec's submission format; :class:`SubmissionError` if it has none or a query limit is set."""
    if spec.submission is None:
        servers = " and ".join(s.title for s in BENCHMARKS.list() if s.submission) or "no benchmark"
        raise SubmissionError(f"no 'submission' file for {spec.title}: only {servers} have a test server to take one")
    if limit is not None:
        raise SubmissionError("a submission needs every query: 'limit' must not be set")
    return spec.submission


BENCHMARKS: Registry[BenchmarkSpec] = Registry(
    "benchmark", error=BenchmarkError, arg_name="category", builtins="clipmath.eval.builtin_benchmarks"
)


def find_benchmark(name: str) -> tuple[BenchmarkSpec, str | None]:
    """``"cirr"`` -> ``(spec, None)``; ``"fashioniq-dress"`` or ``"fashioniq:dress"`` -> ``(spec, "dress")``.

    Names are case-insensitive; an unknown name raises :class:`BenchmarkError` with close matches.
    """
    lowered = name.lower()
    base, dash, variant = lowered.partition("-")
    if lowered not in BENCHMARKS and dash and base in BENCHMARKS and variant in BENCHMARKS.get(base).variants:
        return BENCHMARKS.get(base), variant
    spec, arg = BENCHMARKS.resolve(lowered)
    if arg is not None and arg not in spec.variants:
        raise BenchmarkError(spec._variant_problem(arg))
    return spec, arg


def load_benchmark(
    benchmark: str, root: str | Path, split: str | None = None, category: str | None = None, check_images: bool = True
) -> list[Any]:
    """The datasets of one benchmark split: one for CIRR, CIRCO and SIMAT, one per category for FashionIQ.

    ``benchmark`` may name a variant (``fashioniq-dress``); ``category`` chooses one as well.
    """
    spec, variant = find_benchmark(benchmark)
    if category is not None:
        spec.check_options(variant=category)
        if variant is not None and variant != category:
            raise BenchmarkError(f"benchmark '{benchmark}' and {spec.variant_name} '{category}' disagree")
        variant = category
    return spec.load(root, split, variant, check_images)


def spec_of(datasets: Sequence[Any]) -> BenchmarkSpec:
    """The registered spec of datasets from one benchmark split (``dataset.benchmark`` names it)."""
    if not datasets:
        raise BenchmarkError("no dataset to evaluate")
    names = {(d.benchmark, d.split) for d in datasets}
    if len(names) != 1:
        raise BenchmarkError(f"evaluate one benchmark split at a time, got {sorted(names)}")
    return BENCHMARKS.get(next(iter(names))[0])
