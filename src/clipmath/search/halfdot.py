"""Float16 gallery blocks scored against a float32 query on the CPU: torch's half GEMV or a compiled fused kernel.

torch's eager half GEMV (the default) converts and multiplies in a loop that costs about 1.7x the time of merely
reading the bytes. ``kernel="compiled"`` has torch's own compiler (Inductor, which needs a C++ compiler) fuse the
float16 -> float32 conversion, the multiply and the row sum into one vectorised pass (OpenMP over rows), which runs
near memory speed. Compiling takes seconds once per machine (Inductor caches it on disk; about 2 s per new process),
so it pays for long-lived indexes over large galleries, not one-shot searches; if compiling fails (no compiler),
the eager GEMV is used and a warning says so once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from clipmath.errors import ClipmathError

HALF_KERNELS = ("torch", "compiled")


class UnknownHalfKernel(ClipmathError, ValueError):
    """A ``half_kernel`` that is not one of :data:`HALF_KERNELS` (a user error for front ends)."""


def check_half_kernel(name: str) -> str:
    """``name`` if it is a known kernel; raises :class:`UnknownHalfKernel` (quoting the field) otherwise."""
    if name not in HALF_KERNELS:
        raise UnknownHalfKernel(f"unknown 'half_kernel' {name!r} (use {' or '.join(HALF_KERNELS)})")
    return name


_compiled: dict[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None] = {}


def _fused_dot(block: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """(rows, dim) float16 x (dim,) float32 -> (rows,) float32: products and sums in float32."""
    return (block.to(torch.float32) * query).sum(-1)


def compiled_half_dot() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The compiled fused kernel for the current torch thread count, or None if it cannot be built here."""
    threads = torch.get_num_threads()  # the kernel's OpenMP thread count is fixed when it is compiled
    if threads not in _compiled:
        kernel = torch.compile(_fused_dot, dynamic=False, fullgraph=True)
        probe = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8).div_(512).half()
        query = torch.linspace(-1, 1, 8)
        try:
            torch._dynamo.mark_dynamic(probe, 0)  # one kernel for every block height
            ok = torch.allclose(kernel(probe, query), probe.float() @ query, atol=1e-5)
        except Exception as error:  # no C++ compiler, unsupported platform...
            reason = f"{type(error).__name__}: {error!s:.200}"
            warnings.warn(f"compiled float16 kernel unavailable, using torch's half GEMV ({reason})", stacklevel=2)
            ok = False
        _compiled[threads] = kernel if ok else None
    return _compiled[threads]


def half_scores(block: torch.Tensor, query: torch.Tensor, kernel: str = "torch") -> torch.Tensor:
    """(rows,) scores of a CPU float16 ``block`` against one float32 ``query``.

    ``"torch"``: half scores of the query rounded to half; ``"compiled"`` (if it could be built): float32 scores of
    the float32 query, as precise as converting the block to float32 first.
    """
    fused = compiled_half_dot() if kernel == "compiled" else None
    if fused is None:
        return block @ query.to(torch.float16)  # float32 accumulation, reads the block once
    if len(block) < 2:  # a block of 0 or 1 rows cannot use the kernel compiled for a dynamic height
        return block.to(torch.float32) @ query.to(torch.float32)
    torch._dynamo.mark_dynamic(block, 0)
    return fused(block, query.to(torch.float32))
