"""Single-threaded work on every core (``instruments.threads``), as the LAPACK eigen-solves use it:
results in order, torch's thread count restored (also after a failure), and nested use (work that
parallelises itself, called from inside such a block) running serially instead of waiting forever on
the lock its own caller holds."""

from __future__ import annotations

import threading

import pytest
import torch

from glorot_core.instruments import lapack
from glorot_core.instruments.threads import parallel_map, torch_single_threaded


@pytest.fixture
def two_threads() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_workers_are_single_threaded_and_results_keep_their_order(two_threads: None) -> None:
    def probe(v: int) -> tuple[int, int, int]:
        return v * v, torch.get_num_threads(), threading.get_ident()

    with torch_single_threaded() as cores:
        assert cores == 2 and torch.get_num_threads() == 1
        out = parallel_map(probe, list(range(20)), cores)
    assert [o[0] for o in out] == [v * v for v in range(20)]
    assert {o[1] for o in out} == {1}
    assert threading.get_ident() not in {o[2] for o in out}  # pool threads ran them, not the caller
    assert torch.get_num_threads() == 2


def test_a_failure_is_raised_and_the_thread_count_restored(two_threads: None) -> None:
    with pytest.raises(ZeroDivisionError), torch_single_threaded() as cores:
        parallel_map(lambda v: 1 // v, [3, 2, 1, 0], cores)
    assert torch.get_num_threads() == 2
    with torch_single_threaded() as cores:  # the lock was released
        assert cores == 2


@pytest.mark.skipif(not lapack.available(), reason="no LAPACK found beside numpy")
def test_nested_eigen_solves_run_serially(two_threads: None) -> None:
    """Eigen-solves called from a worker of parallel_map (as a plugin instrument might) get one thread."""
    gen = torch.Generator().manual_seed(0)
    mats = [(lambda a: a @ a.T)(torch.randn(40, 40, dtype=torch.float64, generator=gen)) for _ in range(4)]

    def top(m: torch.Tensor) -> float:
        with torch_single_threaded() as cores:
            assert cores == 1  # nested: nothing to spread over
            return float(lapack.eigvalsh(m.unsqueeze(0))[0, -1])

    with torch_single_threaded() as cores:
        tops = parallel_map(top, mats, cores)
    for m, t in zip(mats, tops, strict=True):
        assert t == pytest.approx(float(torch.linalg.eigvalsh(m)[-1]), rel=1e-12)
    assert torch.get_num_threads() == 2
