"""How to run an evaluation: :class:`EvalConfig` (the benchmark and methods are arguments of the runner)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from clipmath.errors import ClipmathError
from clipmath.eval.cir import DEFAULT_DEPTH


@dataclass
class EvalConfig:
    """How to run an evaluation (the benchmark and methods are arguments of :func:`clipmath.eval.evaluate`).

    ``lams``: λ values of benchmarks that take one (SIMAT; methods that use λ get one result row each). ``limit``:
    only the first N queries of each dataset (a quick check; such numbers are not comparable with published ones).
    ``caption_orders``: FashionIQ queries as SEARLE builds them (``both``: the query features of ``"c0 and c1"`` and
    ``"c1 and c0"`` averaged) or as CLIP4Cir does (``one``). ``oracle``: SIMAT's judge (default: ground-truth
    labels). ``reencode``: encode the gallery in memory at every call instead of caching it (while the encoder
    itself is being fine-tuned, a cache keyed by its name would be stale). ``options``: facts a registered
    benchmark's own protocol reads (e.g. a caption scorer's settings); the built-in benchmarks read none.
    """

    lams: tuple[float, ...] = (1.0,)
    limit: int | None = None
    caption_orders: str = "both"
    oracle: Any = None
    batch_size: int = 64
    depth: int = DEFAULT_DEPTH
    progress: bool = True
    reencode: bool = False
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.caption_orders not in ("both", "one"):
            raise ClipmathError(f"caption_orders is 'both' or 'one', not {self.caption_orders!r}")
        if not self.lams:
            raise ClipmathError("give at least one λ value")
        bad = [lam for lam in self.lams if not math.isfinite(lam)]
        if bad:
            raise ClipmathError(f"every λ value ('lams') must be a finite number, not {bad[0]!r}")
        if self.limit is not None and self.limit < 1:
            raise ClipmathError("limit must be at least 1")
