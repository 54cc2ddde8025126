"""Gallery rows scored against one float32 query on the CPU at memory speed: float16 and float32 blocks.

Float16 blocks: torch's eager half GEMV converts and multiplies in a loop that costs about 1.5-1.8x the time of
merely reading the bytes. A fused kernel does the float16 -> float32 conversion, the multiply and the row sum in one
pass at memory speed, with float32 products and sums. Two builds:

- ``native``: ``rowdot.c`` (AVX2 + FMA + F16C, software prefetch, OpenMP over torch's thread count), built once
  per machine by the system C compiler into the cache (``CLIPMATH_CACHE``, a fraction of a second) and called
  through ctypes. x86-64 Linux and macOS.
- ``inductor``: torch's own compiler fuses the same expression (needs a C++ compiler; about 2 s per new process and
  one compile per dimension and thread count). Runs where torch compiles, ARM included.

``half_kernel`` picks one: ``auto`` (the default: native where it runs, else the GEMV, quietly), ``torch`` (the
GEMV), ``compiled`` (native, else inductor), ``native`` or ``inductor``. A kernel named explicitly that cannot be
built here warns once and the GEMV is used.

Float32 blocks: torch's GEMM with one to three queries runs at 2.5-5x the memory floor (and on one thread);
:func:`float_dot_kernel` is the same native loop over float32 rows, used quietly where it runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from clipmath.errors import ClipmathError
from clipmath.paths import cache_dir

HALF_KERNELS = ("auto", "torch", "compiled", "native", "inductor")
RowDot = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_NATIVE_FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-shared", "-fPIC")
_OPENMP_FLAG = "-fopenmp"  # left out (one thread) where the compiler has no OpenMP, e.g. Apple's clang
_PREFETCH_BYTES = 8192  # how far ahead the native loop asks for cache lines (best of 2-16 KB on a Zen core)


class UnknownHalfKernel(ClipmathError, ValueError):
    """A ``half_kernel`` that is not one of :data:`HALF_KERNELS` (a user error for front ends)."""


def check_half_kernel(name: str) -> str:
    """``name`` if it is a known kernel; raises :class:`UnknownHalfKernel` (quoting the field) otherwise."""
    if name not in HALF_KERNELS:
        raise UnknownHalfKernel(f"unknown 'half_kernel' {name!r} (use {' or '.join(HALF_KERNELS)})")
    return name


# ---------------------------------------------------------------- native: rowdot.c through ctypes


class _NativeRowDot:
    """One C kernel of ``rowdot.c`` for rows of ``dtype`` (ctypes releases the GIL while it runs)."""

    def __init__(self, function: Callable[..., None], dtype: torch.dtype):
        self.function = function
        self.dtype = dtype

    def __call__(self, block: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        if block.dtype != self.dtype or block.device.type != "cpu" or block.dim() != 2:
            raise ValueError(f"this kernel scores 2-d CPU {self.dtype} blocks, not {block.dtype} {tuple(block.shape)}")
        if query.shape != block.shape[1:]:
            raise ValueError(f"query of shape {tuple(query.shape)} for rows of {block.shape[1]} values")
        block = block.contiguous()
        query = query.to(torch.float32).contiguous()
        out = torch.empty(len(block), dtype=torch.float32)
        threads = torch.get_num_threads()
        self.function(
            block.data_ptr(), query.data_ptr(), out.data_ptr(), len(block), block.shape[1], _PREFETCH_BYTES, threads
        )
        return out


def _native_supported() -> str | None:
    """Why the native kernel cannot run on this machine, or None if it can."""
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return f"the native kernel is for x86-64 Linux/macOS (this is {platform.machine()} {sys.platform})"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return "the native kernel needs AVX2, FMA and F16C"
    return None


def build_native_library(compiler: str | None = None) -> Path:
    """The shared library built from ``rowdot.c`` (cached by source, compiler and flags); raises if it fails."""
    compiler = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC)")
    source = resources.files("clipmath.search").joinpath("rowdot.c").read_bytes()
    builds = {}  # with OpenMP first, then without
    for flags in ((*_NATIVE_FLAGS, _OPENMP_FLAG), _NATIVE_FLAGS):
        digest = hashlib.sha256(b"\0".join([source, compiler.encode(), *(flag.encode() for flag in flags)]))
        builds[flags] = cache_dir() / "kernels" / f"rowdot-{digest.hexdigest()[:16]}.so"
    cached = [target for target in builds.values() if target.exists()]
    if cached:  # a compiler without OpenMP is not asked again in every process
        return cached[0]
    for flags, target in builds.items():
        try:
            _compile(compiler, flags, source, target)
            return target
        except RuntimeError as error:
            failure = error
    raise failure


def _compile(compiler: str, flags: tuple[str, ...], source: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source_path, built = Path(scratch) / "rowdot.c", Path(scratch) / target.name
        source_path.write_bytes(source)
        command = [*shlex.split(compiler), *flags, str(source_path), "-o", str(built)]  # CC may be "ccache gcc"
        run = subprocess.run(command, capture_output=True)
        if run.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {run.stderr.decode(errors='replace').strip()[:300]}")
        os.replace(built, target)  # atomic: concurrent builders (Ray actors) each publish a complete file


@dataclass(frozen=True)
class _NativeKernels:
    """Both kernels of the loaded ``rowdot.c`` library, or None and why not."""

    half: RowDot | None
    float: RowDot | None
    reason: str = ""


_native: list[_NativeKernels] = []  # the one load of this process (tests reset it)


def _native_kernels() -> _NativeKernels:
    """The native kernels, built and loaded on first use."""
    if not _native:
        _native.append(_load_native_kernels())
    return _native[0]


def _load_native_kernels() -> _NativeKernels:
    reason = _native_supported()
    if reason:
        return _NativeKernels(None, None, reason)
    try:
        library = ctypes.CDLL(str(build_native_library()))
    except (OSError, RuntimeError) as error:
        return _NativeKernels(None, None, f"native kernel: {error!s:.300}")
    return _NativeKernels(
        _bind(library.clipmath_half_dot, torch.float16), _bind(library.clipmath_float_dot, torch.float32)
    )


def _bind(function: Callable[..., None], dtype: torch.dtype) -> RowDot:
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 4
    function.restype = None
    return _NativeRowDot(function, dtype)


def _load_native() -> tuple[RowDot | None, str]:
    kernels = _native_kernels()
    return kernels.half, kernels.reason


def float_dot_kernel() -> RowDot | None:
    """The native float32 kernel (float32 rows x float32 query at memory speed), or None where it cannot run."""
    return _native_kernels().float


# ---------------------------------------------------------------- inductor: torch.compile of the same expression


def _fused_dot(block: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """(rows, dim) float16 x (dim,) float32 -> (rows,) float32: products and sums in float32."""
    return (block.to(torch.float32) * query).sum(-1)


def _load_inductor() -> tuple[RowDot | None, str]:
    """torch.compile of :func:`_fused_dot` for the current thread count (its OpenMP count is fixed when compiled)."""
    kernel = torch.compile(_fused_dot, dynamic=False, fullgraph=True)
    probe = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8).div_(512).half()
    query = torch.linspace(-1, 1, 8)
    try:
        torch._dynamo.mark_dynamic(probe, 0)  # one kernel for every block height
        if not torch.allclose(kernel(probe, query), probe.float() @ query, atol=1e-5):
            return None, "inductor kernel: wrong scores on the probe"
    except Exception as error:  # no C++ compiler, unsupported platform...
        return None, f"inductor kernel: {type(error).__name__}: {error!s:.200}"

    failed: list[str] = []

    def inductor_dot(block: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        if len(block) >= 2 and not failed:  # 0 or 1 rows cannot use the kernel compiled for a dynamic height
            block = block.contiguous()
            torch._dynamo.mark_dynamic(block, 0)
            try:
                return kernel(block, query.to(torch.float32))
            except Exception as error:  # e.g. torch's recompile limit: one kernel per dimension and thread count
                failed.append(f"{type(error).__name__}: {error!s:.200}")
                warnings.warn(f"inductor float16 kernel failed, converting blocks instead ({failed[0]})", stacklevel=2)
        return block.to(torch.float32) @ query.to(torch.float32)

    return inductor_dot, ""


_LOADERS = {"native": _load_native, "inductor": _load_inductor}
_loaded: dict[tuple[str, int], tuple[RowDot | None, str]] = {}


def half_dot_kernel(build: str) -> RowDot | None:
    """One build of the fused kernel (``"native"`` or ``"inductor"``), or None if it cannot run here."""
    key = (build, torch.get_num_threads() if build == "inductor" else 0)
    if key not in _loaded:
        _loaded[key] = _LOADERS[build]()
    return _loaded[key][0]


_BUILDS_OF = {"auto": ("native",), "compiled": ("native", "inductor"), "native": ("native",), "inductor": ("inductor",)}
_warned: set[str] = set()


def fused_kernel(name: str) -> RowDot | None:
    """The fused kernel that ``half_kernel=name`` selects here, or None for torch's half GEMV.

    ``"auto"`` quietly uses the GEMV where the native kernel cannot run; a kernel asked for by name that cannot be
    built here warns once, then the GEMV serves.
    """
    for build in _BUILDS_OF.get(check_half_kernel(name), ()):
        kernel = half_dot_kernel(build)
        if kernel is not None:
            return kernel
    if name not in ("auto", "torch") and name not in _warned:
        reasons = "; ".join(
            reason for (build, _), (_, reason) in _loaded.items() if reason and build in _BUILDS_OF[name]
        )
        warnings.warn(f"{name} float16 kernel unavailable, using torch's half GEMV ({reasons})", stacklevel=2)
        _warned.add(name)
    return None


def half_scores(block: torch.Tensor, query: torch.Tensor, kernel: str = "auto") -> torch.Tensor:
    """(rows,) scores of a CPU float16 ``block`` against one float32 ``query``.

    With a fused kernel (see :func:`fused_kernel`): float32 scores of the float32 query, as precise as converting the
    block to float32 first. With torch's half GEMV: the query rounded to half, float32 sums.
    """
    fused = fused_kernel(kernel)
    if fused is None:
        return block @ query.to(torch.float16)  # float32 accumulation, reads the block once
    return fused(block, query)
