"""The CPU eigen-solver path (OpenBLAS ?syevd through ctypes) against torch.linalg.eigvalsh.

Tolerances: a backward-stable symmetric eigen-solver perturbs each eigenvalue by O(n · ε · ‖A‖₂)
(Weyl), so two of them agree to a few n·ε·λ_max: 1e-12·λ_max in float64 and 64·n·ε₃₂·λ_max in
float32 at the sizes used here.
"""

from __future__ import annotations

import math

import pytest
import torch

from glorot_core.activations import get_activation
from glorot_core.instruments import jacobian as jac
from glorot_core.instruments import lapack
from glorot_core.models import MLP


def _spd(batch: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n + 3, generator=g, dtype=torch.float64)
    return (a @ a.mT / n).to(dtype)


def _tol(k: torch.Tensor) -> float:
    n = k.shape[-1]
    scale = float(torch.linalg.eigvalsh(k.double()).abs().max())
    return (1e-12 if k.dtype == torch.float64 else 64 * n * torch.finfo(torch.float32).eps) * scale


def test_the_openblas_path_is_found_here() -> None:
    # The speed-up the benchmark reports rests on this path; a silent fallback to torch would hide it.
    assert lapack.available(), "numpy's OpenBLAS LAPACKE_?syevd not found: the CPU exact mode would use torch"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_eigvalsh_matches_torch(dtype: torch.dtype, threads: int) -> None:
    k = _spd(5, 40, dtype)
    keep = k.clone()
    w = lapack.eigvalsh(k, threads)
    assert w is not None and w.dtype == dtype and w.shape == (5, 40)
    torch.testing.assert_close(w, torch.linalg.eigvalsh(keep), rtol=0, atol=_tol(keep))
    assert torch.equal(k, keep), "overwrite=False must leave the input alone"
    assert bool((w[:, 1:] >= w[:, :-1]).all()), "ascending, like torch"


def test_eigvalsh_batch_shapes_and_overwrite() -> None:
    k = _spd(6, 12, torch.float64).reshape(2, 3, 12, 12)
    ref = torch.linalg.eigvalsh(k)
    w = lapack.eigvalsh(k.clone(), overwrite=True)
    assert w is not None and w.shape == (2, 3, 12)
    torch.testing.assert_close(w, ref, rtol=0, atol=_tol(k))
    single = lapack.eigvalsh(k[0, 0])
    assert single is not None and single.shape == (12,)
    torch.testing.assert_close(single, ref[0, 0], rtol=0, atol=_tol(k))


def test_non_finite_matrix_gives_nan_and_the_others_are_solved() -> None:
    k = _spd(4, 10, torch.float64)
    ref, tol = torch.linalg.eigvalsh(k), _tol(k)
    k[2, 3, 4] = math.nan
    k[1, 0, 0] = math.inf
    w = lapack.eigvalsh(k)
    assert w is not None
    assert bool(w[1].isnan().all()) and bool(w[2].isnan().all())
    torch.testing.assert_close(w[[0, 3]], ref[[0, 3]], rtol=0, atol=tol)


@pytest.mark.parametrize("shape", [(4, 7, 11), (4, 11, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solve_each_of_the_smaller_gram(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    j = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gram = j @ j.mT if shape[1] <= shape[2] else j.mT @ j
    jn = j.to(dtype).numpy()
    k = min(shape[1:])
    w = lapack.solve_each(4, k, dtype, lambda b, scratch: lapack.gram_into(jn[b], scratch), threads=2)
    assert w is not None and w.shape == (4, k)
    torch.testing.assert_close(w.double(), torch.linalg.eigvalsh(gram), rtol=0, atol=_tol(gram.to(dtype)))


def test_solve_each_restores_thread_counts() -> None:
    threads = torch.get_num_threads()
    seen: list[int] = []

    def matrix(b: int, scratch):
        seen.append(torch.get_num_threads())
        scratch[:] = 0
        return scratch

    w = lapack.solve_each(3, 4, torch.float64, matrix, threads=2)
    assert w is not None and torch.equal(w, torch.zeros(3, 4, dtype=torch.float64))
    assert seen == [1, 1, 1], "workers build their matrices single-threaded"
    assert torch.get_num_threads() == threads


def test_not_handled_cases_return_none() -> None:
    assert lapack.eigvalsh(_spd(2, 4, torch.float16)) is None
    assert lapack.eigvalsh(_spd(2, 4, torch.float64).requires_grad_()) is None
    assert lapack.solve_each(2, 4, torch.float16, lambda b, s: s) is None


def test_jacobian_spectra_equal_with_torch_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = MLP([9, 12, 10, 12, 8, 3], get_activation("tanh")).double()
    x = torch.randn(5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fast = [*jac.layer_jacobian_spectra(model, x), jac.end_to_end_spectrum(model, x)]
    monkeypatch.setattr(lapack, "_solvers", lambda: None)
    slow = [*jac.layer_jacobian_spectra(model, x), jac.end_to_end_spectrum(model, x)]
    for f, s in zip(fast, slow, strict=True):
        for key in ("mean_sv", "mean_sq_sv", "max_sv", "min_sv"):
            torch.testing.assert_close(f[key], s[key], rtol=1e-10, atol=1e-12)
        assert torch.equal(f["histogram"]["counts"], s["histogram"]["counts"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_eigvalsh_is_the_layer_gram(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(9, 13, generator=gen, dtype=torch.float64)
    d = torch.rand(6, 9, generator=gen, dtype=torch.float64)
    d[4, 2] = math.nan  # one example with a non-finite derivative: NaN, the rest solved
    grams = (w @ w.T) * d[:, :, None] * d[:, None, :]
    lam = lapack.scaled_eigvalsh((w @ w.T).to(dtype), d.to(dtype))
    assert lam is not None and lam.shape == (6, 9)
    assert bool(lam[4].isnan().all())
    keep = [0, 1, 2, 3, 5]
    torch.testing.assert_close(lam[keep].double(), torch.linalg.eigvalsh(grams[keep]), rtol=0,
                               atol=_tol(grams[keep].to(dtype)))


def test_environment_forces_the_torch_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOROT_TORCH_EIGVALSH", "1")
    lapack._solvers.cache_clear()
    try:
        assert not lapack.available() and lapack.eigvalsh(_spd(2, 4, torch.float64)) is None
        k = _spd(3, 6, torch.float64)
        assert torch.equal(jac._batched_eigvalsh(k.clone()), torch.linalg.eigvalsh(k))
    finally:
        monkeypatch.delenv("GLOROT_TORCH_EIGVALSH")
        lapack._solvers.cache_clear()
    assert lapack.available()


def test_concurrent_callers_get_right_answers_and_thread_counts_are_restored() -> None:
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    ks = [_spd(4, 30, torch.float64, seed=s) for s in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda k: lapack.eigvalsh(k, 2), ks))
    for k, w in zip(ks, got, strict=True):
        torch.testing.assert_close(w, torch.linalg.eigvalsh(k), rtol=0, atol=_tol(k))
    assert torch.get_num_threads() == threads
