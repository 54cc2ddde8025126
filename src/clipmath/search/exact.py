"""Exact top-k by blocked matrix products on torch (CPU or CUDA), float32 or float16 galleries, no gallery copy.

Each block of gallery rows is scored in the gallery's own precision (a float16 gallery is never converted as a
whole: torch multiplies half-precision blocks with float32 accumulation; on CUDA the gallery lives on the GPU in
half precision). Scores in reduced precision are only used to *select* candidates: every row whose approximate
score is within a proven error margin of the running k-th best is kept, and the candidates are re-scored in float32
from the gallery's own vectors on the host. So the result is the float32 top-k of the stored vectors (ties broken by
lower row), whatever the precision the scan ran in, and memory stays bounded for galleries of any size (memmaps too).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from clipmath.search.base import (
    Exclusions,
    SearchResults,
    VectorIndex,
    check_gallery,
    check_k,
    check_queries,
    pad_results,
    top_k_sorted,
    unique_rows,
    usable_rows,
)
from clipmath.search.rowdot import check_half_kernel, float_dot_kernel, fused_kernel, half_scores

_HALF_EPS = 2.0**-11  # relative rounding error bound of float16
_FLOAT_EPS = 2.0**-24
#: scored elements (queries x rows) per block: bounds the score matrix to ~64 MB (CPU) / 1 GB (CUDA)
_CPU_BLOCK_ELEMENTS = 1 << 24
_CUDA_BLOCK_ELEMENTS = 1 << 28
#: from this many queries a CPU half block is converted to float32 once (GEMM) instead of read once per query
_CPU_HALF_GEMV_QUERIES = 64
#: below this many queries a CPU float32 block is read once per query by the native kernel (torch's GEMM with 1-3
#: queries runs at 2.5-5x the memory floor; from 4 it wins by reading the block once for all)
_CPU_FLOAT_NATIVE_QUERIES = 4
#: gallery rows converted at a time when uploading to the device or computing the largest norm
_CONVERT_ROWS = 262_144
#: rows per chunk when one query's top rows are pre-selected by chunk maxima
_TOP_CHUNK = 64
#: candidates taken per block beyond k before checking that none was missed
_EXTRA_CANDIDATES = 32


def _block_top(scores: torch.Tensor, take: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, take, dim=1)``; one query's long CPU row is cut to the chunks that can hold its top.

    The ``take``-th largest of the chunk maxima is a real score, so every one of the top ``take`` scores is at least
    it, and lies in a chunk whose maximum is too: selecting those chunks first loses none (about 6x less work).
    """
    rows = scores.shape[1]
    if len(scores) != 1 or scores.device.type != "cpu" or rows < _TOP_CHUNK * take * 8:
        return torch.topk(scores, take, dim=1, sorted=True)
    whole = rows - rows % _TOP_CHUNK
    maxima = scores[0, :whole].view(-1, _TOP_CHUNK).amax(1)
    lowest = torch.topk(maxima, take, sorted=False).values.min()
    chunks = (maxima >= lowest).nonzero()[:, 0]
    candidates = torch.cat(
        [(chunks[:, None] * _TOP_CHUNK + torch.arange(_TOP_CHUNK)).reshape(-1), torch.arange(whole, rows)]
    )
    values, picked = torch.topk(scores[0, candidates], take, sorted=True)
    return values[None], candidates[picked][None]


def _each_query(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], block: torch.Tensor, query_t: torch.Tensor
) -> torch.Tensor:
    """(B, rows) scores of ``block``, one ``score(block, query)`` pass per query."""
    if len(query_t) == 1:
        return score(block, query_t[0])[None]
    return torch.stack([score(block, query) for query in query_t])


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A zero-copy CPU tensor over ``array`` (read-only memmaps included; torch never writes to it here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(array)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None`` means CPU. A CUDA device without a GPU is a user error."""
    from clipmath.errors import ClipmathError

    target = torch.device(device or "cpu")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ClipmathError(f"device '{device}' was asked for, but torch sees no CUDA GPU here (use device 'cpu')")
    return target


class ExactIndex(VectorIndex):
    """Brute-force inner product over ``vectors`` (float32 or float16, array or memmap; kept, not copied).

    ``max_norm`` (the largest row norm, e.g. 1.0 for unit vectors) saves the one pass that computes it, which the
    error margin of a reduced-precision scan needs. ``device="cuda"`` keeps a half-precision copy of the gallery on
    the GPU and scans it there; candidates are still re-scored in float32 from ``vectors`` on the host, so the ids
    equal the CPU's except between near-ties.
    ``resident=True`` does the same on the CPU (the GPU code path, testable without a GPU).
    ``half_kernel`` scores float16 blocks on the CPU for few queries: ``"auto"`` (a fused kernel at memory speed
    where it can be built, else torch's half GEMV), ``"torch"``, ``"compiled"``, ``"native"`` or ``"inductor"``
    (see :mod:`clipmath.search.rowdot`).
    """

    kind = "exact"

    def __init__(
        self,
        vectors: np.ndarray,
        block_rows: int = 1 << 20,
        query_batch: int = 256,
        device: str | torch.device | None = "cpu",
        max_norm: float | None = None,
        resident: bool | None = None,
        half_kernel: str = "auto",
    ) -> None:
        self.half_kernel = check_half_kernel(half_kernel)
        check_gallery(vectors)
        if vectors.dtype not in (np.float16, np.float32):
            vectors = np.asarray(vectors, dtype=np.float32)
        self.vectors = vectors
        self.block_rows = max(1, int(block_rows))
        self.query_batch = max(1, int(query_batch))
        self.device = resolve_device(device)
        self._max_norm = max_norm
        self._on_device: torch.Tensor | None = None
        if resident if resident is not None else self.device.type != "cpu":
            self._on_device = self._upload()

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def scan_dtype(self) -> torch.dtype:
        """The precision gallery blocks are scored in."""
        if self._on_device is not None or self.vectors.dtype == np.float16:
            return torch.float16
        return torch.float32

    def search(self, queries: np.ndarray, k: int, exclude: Exclusions = None) -> SearchResults:
        queries = check_queries(queries, self.dim)
        k = check_k(k)
        all_scores: list[np.ndarray] = []
        all_rows: list[np.ndarray] = []
        for q0 in range(0, len(queries), self.query_batch):
            batch = queries[q0 : q0 + self.query_batch]
            excluded = None if exclude is None else exclude[q0 : q0 + len(batch)]
            scores, rows = self._search_batch(batch, k, excluded)
            all_scores += scores
            all_rows += rows
        return pad_results(all_scores, all_rows, k)

    # ---- internals ----------------------------------------------------------------------------------------
    def _upload(self) -> torch.Tensor:
        """The gallery on the device in half precision, copied block by block (no full-size host conversion)."""
        out = torch.empty((self.ntotal, self.dim), dtype=torch.float16, device=self.device)
        for start in range(0, self.ntotal, _CONVERT_ROWS):
            block = np.ascontiguousarray(self.vectors[start : start + _CONVERT_ROWS])
            out[start : start + len(block)] = _as_tensor(block).to(self.device, non_blocking=False).half()
        return out

    def _gallery_block(self, start: int, stop: int) -> torch.Tensor:
        if self._on_device is not None:
            return self._on_device[start:stop]
        return _as_tensor(np.ascontiguousarray(self.vectors[start:stop]))

    def max_norm(self) -> float:
        """Largest row norm (computed once, block by block): scales the error margin of reduced precision."""
        if self._max_norm is None:
            best = 0.0
            for start in range(0, self.ntotal, _CONVERT_ROWS):
                block = self._gallery_block(start, min(self.ntotal, start + _CONVERT_ROWS))
                norms = torch.linalg.vector_norm(block, dim=1, dtype=torch.float32)
                norms = norms[torch.isfinite(norms)]  # a row holding NaN or infinity is never a result
                if len(norms):
                    best = max(best, float(norms.max()))
            self._max_norm = best
        return self._max_norm

    def _half_rounded_scan(self, n_queries: int) -> bool:
        """Whether this scan rounds the query or its scores to half precision (vs float32 products and sums)."""
        if self._on_device is not None:
            return True
        if self.vectors.dtype != np.float16 or n_queries >= _CPU_HALF_GEMV_QUERIES:
            return False  # float32 gallery, or half blocks converted exactly to float32 for a GEMM
        return fused_kernel(self.half_kernel) is None

    def _relative_error(self, half_rounded: bool) -> float:
        """Bound on |approximate - float32 score| / (|q| * max |v|) for one scan."""
        accumulate = self.dim * _FLOAT_EPS * 2
        if not half_rounded:
            return accumulate + 1e-7
        # the query rounded to half, the half score rounded, and (on a GPU) the gallery rounded to half too
        error = 2 * _HALF_EPS + accumulate
        if self._on_device is not None:
            error += 6 * _HALF_EPS  # gallery rounding + room for reduced-precision split-K reductions in cuBLAS
        return error

    def _scores(self, query_t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(B, rows) scores of one gallery block (-inf for a row whose score is not finite: it ranks nowhere)."""
        scores = self._raw_scores(query_t, start, stop)
        return scores.nan_to_num_(nan=-torch.inf, posinf=-torch.inf)

    def _raw_scores(self, query_t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Bandwidth-bound kernels for few queries, float32 GEMM for many."""
        block = self._gallery_block(start, stop)
        if block.dtype == torch.float16 and block.device.type == "cpu" and len(query_t) >= _CPU_HALF_GEMV_QUERIES:
            return query_t.float() @ block.float().T  # many queries: one conversion of the block pays for all
        if block.dtype == torch.float16 and block.device.type == "cpu":
            # one pass over the block per query (half GEMV or the fused kernel); torch's half GEMM is far slower
            return _each_query(partial(half_scores, kernel=self.half_kernel), block, query_t)
        if block.dtype == torch.float32 and block.device.type == "cpu" and len(query_t) < _CPU_FLOAT_NATIVE_QUERIES:
            fused = float_dot_kernel()
            if fused is not None:
                return _each_query(fused, block, query_t)
        return query_t.to(block.dtype) @ block.T

    def _search_batch(self, queries: np.ndarray, k: int, exclude: Exclusions) -> tuple[list, list]:
        n = self.ntotal
        if n == 0:
            return [np.empty(0, np.float32)] * len(queries), [np.empty(0, np.int64)] * len(queries)
        on_cpu = self.device.type == "cpu"
        budget = _CPU_BLOCK_ELEMENTS if on_cpu else _CUDA_BLOCK_ELEMENTS
        rows_per_block = max(k, min(self.block_rows if on_cpu else n, budget // len(queries)))
        device = self.device
        query_t = _as_tensor(queries).to(device)
        half_rounded = self._half_rounded_scan(len(queries))
        margin = torch.from_numpy(
            self._relative_error(half_rounded) * np.linalg.norm(queries, axis=1) * max(self.max_norm(), 1e-30) + 1e-7
        ).to(device)
        # the threshold itself is compared with rounded scores: 2**-10 |kth| covers half, 2**-20 float32
        rounding = 2.0**-10 if half_rounded else 2.0**-20
        running_kth = torch.full((len(queries),), -torch.inf, device=device)
        picked_rows, picked_scores = [], []
        for start in range(0, n, rows_per_block):
            stop = min(n, start + rows_per_block)
            scores = self._scores(query_t, start, stop)
            if exclude is not None:
                for qi, rows in enumerate(exclude):
                    local = [r - start for r in rows if start <= r < stop]
                    if local:
                        scores[qi, local] = -torch.inf
            take = min(stop - start, k + _EXTRA_CANDIDATES)
            while True:
                values, rows = _block_top(scores, take)
                values = values.float()
                running_kth = torch.maximum(running_kth, values[:, min(k, take) - 1])
                # stop once the last kept row of every query is already below the threshold (or all rows are kept)
                if take == stop - start or bool((values[:, -1] < self._threshold(running_kth, margin, rounding)).all()):
                    break
                take = min(stop - start, take * 4)
            picked_rows.append((rows + start).cpu())
            picked_scores.append(values.cpu())
        threshold = self._threshold(running_kth, margin, rounding).cpu()[:, None]
        all_rows = torch.cat(picked_rows, dim=1).numpy().astype(np.int64)
        keep = (torch.cat(picked_scores, dim=1) >= threshold).numpy()
        cand_q = np.nonzero(keep)[0]
        return self._rescore(queries, k, cand_q, all_rows[keep], exclude)

    @staticmethod
    def _threshold(running_kth: torch.Tensor, margin: torch.Tensor, rounding: float) -> torch.Tensor:
        # the true top-k scores lie above (approximate k-th - 2 * margin), less the rounding of the threshold
        return running_kth - 2 * margin - running_kth.abs().nan_to_num(0, 0, 0) * rounding

    def _rescore(
        self, queries: np.ndarray, k: int, cand_q: np.ndarray, cand_r: np.ndarray, exclude: Exclusions
    ) -> tuple[list, list]:
        """Float32 scores of each query's candidate rows, from the gallery's own vectors; top-k by score, then row."""
        order = np.lexsort((cand_r, cand_q))
        cand_q, cand_r = cand_q[order], cand_r[order]
        bounds = np.searchsorted(cand_q, np.arange(len(queries) + 1))
        best_scores, best_rows = [], []
        for qi in range(len(queries)):
            rows = cand_r[bounds[qi] : bounds[qi + 1]]
            if exclude is not None and len(exclude[qi]):
                rows = rows[~np.isin(rows, np.asarray(list(exclude[qi]), dtype=np.int64))]
            rows = unique_rows(rows)
            with np.errstate(over="ignore", invalid="ignore"):
                scores = np.asarray(self.vectors[rows], dtype=np.float32) @ queries[qi]
            top_scores, top_rows = top_k_sorted(*usable_rows(scores.astype(np.float32), rows), k)
            best_scores.append(top_scores)
            best_rows.append(top_rows)
        return best_scores, best_rows


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, exclude: Exclusions = None, device: str = "cpu"
) -> SearchResults:
    """One-shot exact search (see :class:`ExactIndex`)."""
    return ExactIndex(vectors, device=device).search(queries, k, exclude)
