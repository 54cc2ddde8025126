"""Build and query knobs shared by every index kind, and the sizes derived from them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipmath.search.rowdot import check_half_kernel


@dataclass(frozen=True)
class IndexParams:
    """Build and query knobs. ``nlist=0`` and ``pq_m=0`` pick sizes from the gallery size and dimension.

    ``refine``: re-rank ``refine_factor * k`` approximate candidates by their exact inner product with the gallery's
    own vectors. ``recall``: tune ``ef_search`` / ``nprobe`` (and the re-rank factor) on a held-out sample of the
    gallery until recall@10 reaches it. ``threads``: FAISS OpenMP threads (0: FAISS's default). ``device`` and
    ``half_kernel`` apply to exact search (``"cuda"``: the gallery in half precision on the GPU; ``half_kernel``: how
    float16 blocks are scored on the CPU, see :mod:`clipmath.search.rowdot`).
    """

    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 8
    opq: bool = False
    nprobe: int = 16
    refine: bool = False
    refine_factor: int = 8
    train_size: int = 100_000
    seed: int = 0
    recall: float | None = None
    tune_queries: int = 500
    threads: int = 0
    device: str = "cpu"
    half_kernel: str = "auto"

    def __post_init__(self) -> None:
        check_half_kernel(self.half_kernel)


def ivf_lists(n: int, params: IndexParams) -> int:
    """Inverted lists: ~4 sqrt(n), with at least 39 training points per centroid (FAISS's advice)."""
    return params.nlist or max(1, min(65536, int(4 * math.sqrt(max(n, 1))), n // 39))


def pq_layout(n: int, dim: int, params: IndexParams) -> tuple[int, int]:
    """(sub-quantizers, bits each): ``dim/8`` one-byte codes by default, fewer bits on tiny galleries."""
    pq_m = params.pq_m or _largest_divisor_at_most(dim, max(1, dim // 8))
    pq_bits = min(params.pq_bits, max(1, int(math.log2(max(2, n // 39)))))
    return pq_m, pq_bits


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, cap + 1) if n % d == 0)
