"""Batched symmetric eigenvalues on the CPU through the LAPACK numpy ships, one single-threaded solve per core.

The exact Jacobian mode spends most of its time in eigen-solves of 1000×1000 Grams (paper §4.2.2 sizes).
``torch.linalg.eigvalsh`` on the CPU calls MKL's ``?syevd``; on the AMD EPYC machines this project was
measured on, OpenBLAS's ``ssyevd``, which numpy's wheel bundles, was faster per matrix with the same
eigenvalues to the float32 resolution (figures in benchmarks/README.md). A 1000×1000 tridiagonalisation
is half matrix-vector work that scales poorly over threads, so one single-threaded solve runs on each
core (LAPACK is called through ``ctypes``, which releases the GIL), with OpenBLAS's own pool limited to
one thread meanwhile (``threadpoolctl``): its spinning threads would otherwise fight torch's OpenMP
threads.

The library is found through ``threadpoolctl`` (the BLAS numpy loaded) and called through LAPACKE's
column-major interface, ``?syevd`` with ``jobz='N'`` (eigenvalues only, ascending, as torch returns
them). Symmetric input means row- and column-major agree. When no such library is found (another
numpy build, another platform) these functions return None and the caller uses torch; setting
``GLOROT_TORCH_EIGVALSH=1`` in the environment forces that fallback (to compare, or to rule this path out).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

import numpy as np  # also loads the OpenBLAS that threadpoolctl finds below
import torch
from threadpoolctl import ThreadpoolController

from glorot_core.instruments.threads import parallel_map, torch_single_threaded

Tensor = torch.Tensor

_LAPACK_COL_MAJOR = 102

# (symbol prefix, symbol suffix, integer type): numpy ≥ 2 wheels (scipy-openblas64, ILP64), numpy 1.x
# wheels (openblas64_), and LP64 builds.
_NAMINGS: tuple[tuple[str, str, type[ctypes._SimpleCData]], ...] = (
    ("scipy_", "64_", ctypes.c_int64),
    ("", "64_", ctypes.c_int64),
    ("scipy_", "", ctypes.c_int32),
    ("", "", ctypes.c_int32),
)

Solver = Callable[[int, int, int], int]
"""(n, matrix address, eigenvalue address) -> LAPACK info; overwrites the matrix."""


@functools.cache
def _controller() -> ThreadpoolController:
    """The BLAS/OpenMP libraries loaded in this process, found once (a scan of the loaded objects)."""
    return ThreadpoolController()


@functools.cache
def _solvers() -> dict[torch.dtype, Solver] | None:
    """LAPACKE_{s,d}syevd of the OpenBLAS numpy loaded, or None when there is none."""
    if os.environ.get("GLOROT_TORCH_EIGVALSH"):  # escape hatch: always use torch's eigen-solver
        return None
    for info in _controller().info():
        if info.get("internal_api") != "openblas":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for prefix, suffix, int_t in _NAMINGS:
            try:
                fns = {dt: getattr(lib, f"{prefix}LAPACKE_{c}syevd{suffix}")
                       for dt, c in ((torch.float32, "s"), (torch.float64, "d"))}
            except AttributeError:
                continue
            for fn in fns.values():
                fn.restype = int_t
                fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, int_t, ctypes.c_void_p, int_t,
                               ctypes.c_void_p]
            solvers = {dt: functools.partial(_call, fn) for dt, fn in fns.items()}
            if all(_self_test(solve, dt) for dt, solve in solvers.items()):
                return solvers
    return None


def _self_test(solve: Solver, dtype: torch.dtype) -> bool:
    """[[2, 1], [1, 2]] has eigenvalues 1 and 3: guards against a wrong guess of the integer width."""
    a = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=dtype)
    w = torch.zeros(2, dtype=dtype)
    return solve(2, a.data_ptr(), w.data_ptr()) == 0 and torch.allclose(w, torch.tensor([1.0, 3.0], dtype=dtype))


def _call(fn: ctypes._CFuncPtr, n: int, a: int, w: int) -> int:
    return int(fn(_LAPACK_COL_MAJOR, b"N", b"L", n, a, n, w))


def available() -> bool:
    """Whether :func:`eigvalsh` has a LAPACK to call here."""
    return _solvers() is not None


Matrix = Callable[[int, np.ndarray], np.ndarray]
"""(example index, this worker's n×n scratch buffer) -> the C-contiguous n×n matrix to solve (destroyed)."""


def solve_each(count: int, n: int, dtype: torch.dtype, matrix: Matrix, threads: int | None = None) -> Tensor | None:
    """Eigenvalues (count, n), ascending, of ``count`` symmetric matrices built one at a time by ``matrix``.

    Examples are dealt round-robin to ``threads`` workers (default: torch's intra-op thread count). Each
    worker builds example b's matrix with ``matrix(b, scratch)`` (usually into its own n×n scratch
    buffer, which then stays in cache for the solve) and solves it; torch and OpenBLAS run
    single-threaded meanwhile, so building is parallel over examples too. A matrix with a non-finite
    entry (its sum is checked: one cache-resident pass) is not solved, and its eigenvalues are NaN
    (LAPACK's result on such input is undefined), as are those of a matrix LAPACK reports a failure for.
    None when no LAPACK is found or ``dtype`` is not float32/float64: the caller then uses torch.
    """
    solvers = _solvers()
    if solvers is None or dtype not in solvers:
        return None
    solve = solvers[dtype]
    w = torch.full((count, n), float("nan"), dtype=dtype)
    if count == 0 or n == 0:
        return w
    vec, w0 = w.stride(0) * w.element_size(), w.data_ptr()
    np_dtype = np.float32 if dtype == torch.float32 else np.float64

    def run(indices: range) -> list[int]:
        scratch = np.empty((n, n), dtype=np_dtype)
        failed = []
        for b in indices:
            a = matrix(b, scratch)
            if not np.isfinite(np.add.reduce(a, axis=None)) or solve(n, a.ctypes.data, w0 + b * vec) != 0:
                failed.append(b)
        return failed

    with torch_single_threaded() as cores, _controller().limit(limits=1, user_api="blas"):
        workers = max(1, min(threads or cores, count))
        parts = [range(i, count, workers) for i in range(workers)]
        failed = [b for part in parallel_map(run, parts, workers) for b in part]
    for b in failed:
        w[b] = float("nan")
    return w


def eigvalsh(k: Tensor, threads: int | None = None, *, overwrite: bool = False) -> Tensor | None:
    """Eigenvalues (ascending) of each symmetric matrix in ``k`` (..., n, n), or None if not handled here.

    Handled: CPU float32/float64 tensors not requiring grad, with a LAPACK found. ``overwrite=True`` lets
    LAPACK destroy ``k``'s storage when it is contiguous (saves a copy of every matrix). Non-finite
    matrices give NaN (see :func:`solve_each`).
    """
    if k.device.type != "cpu" or k.requires_grad or k.dim() < 2 or k.dtype not in (torch.float32, torch.float64):
        return None
    n = k.shape[-1]
    a = k.reshape(-1, n, n)
    if not (overwrite and a.is_contiguous() and a.data_ptr() == k.data_ptr()):
        a = a.clone(memory_format=torch.contiguous_format)
    an = a.numpy()
    w = solve_each(a.shape[0], n, k.dtype, lambda b, _scratch: an[b], threads)
    return None if w is None else w.reshape(*k.shape[:-2], n)


def scaled_eigvalsh(g: Tensor, d: Tensor, threads: int | None = None) -> Tensor | None:
    """Eigenvalues (ascending) of diag(d_b) · G · diag(d_b) for each row d_b of ``d`` (B, n), or None.

    ``g`` (n, n) is symmetric and shared by the batch (a layer's W Wᵀ: the exact Jacobian mode's Gram
    trick). Each worker scales G into its own scratch buffer, which stays in cache for the solve,
    instead of a (B, n, n) batch of Grams going through memory twice.
    """
    if g.device.type != "cpu" or g.requires_grad or g.dim() != 2 or g.dtype not in (torch.float32, torch.float64):
        return None
    gn = g.contiguous().numpy()
    dn = d.detach().to(g.dtype).contiguous().numpy()

    def matrix(b: int, scratch: np.ndarray) -> np.ndarray:
        np.multiply(gn, dn[b][:, None], out=scratch)
        scratch *= dn[b][None, :]
        return scratch

    return solve_each(dn.shape[0], g.shape[0], g.dtype, matrix, threads)


def gram_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The smaller Gram of ``x`` (x xᵀ if it is wide, else xᵀ x) written into ``out``.

    numpy's matmul calls BLAS ``?syrk`` for a product with its own transpose: half the flops of a GEMM
    such as torch's batched ``j @ j.mT``.
    """
    return np.matmul(x, x.T, out=out) if x.shape[0] <= x.shape[1] else np.matmul(x.T, x, out=out)


__all__ = ["available", "eigvalsh", "gram_into", "scaled_eigvalsh", "solve_each"]
