"""The registry's per-point phase on the CPU: instruments at probe points run side by side on every core,
each single-threaded. The sections must be those of one-at-a-time measurement, torch's thread count
must come back as it was (also after a failing instrument), and work that parallelises itself (the
LAPACK eigen-solves) must run inside it without waiting on itself."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from glorot_core.activations import get_activation
from glorot_core.data.shapeset import generate
from glorot_core.instruments import lapack
from glorot_core.instruments.base import Instrument
from glorot_core.instruments.host import to_host
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.registry import DEFAULT
from glorot_core.instruments.snapshot import capture_mlp
from glorot_core.instruments.threads import parallel_map, torch_single_threaded
from glorot_core.losses import cross_entropy
from glorot_core.models import build_mlp
from glorot_core.spec import JacobianSpec, ModelSpec


def _snapshot() -> tuple[Any, Monitor]:
    x, y = generate(120, seed=3)
    model, _ = build_mlp(ModelSpec(hidden=[64, 48, 32], activation="tanh"), seed=1)
    mon = Monitor(x, y, get_activation("tanh"), cross_entropy, JacobianSpec(mode="off"), 50)
    snap, _ = capture_mlp(model, mon)
    return snap, mon


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal trees; floats to 1e-6 relative: a dot product split over two threads adds in another order
    (float32 rounding, ≈1e-7 relative for these sizes), everything else is the same operations."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _close(u, v, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12), path
    else:
        assert a == b, path


@pytest.fixture
def two_threads() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_parallel_sections_equal_one_at_a_time(two_threads: None) -> None:
    snap, mon = _snapshot()
    seen: set[int] = set()

    class Where(Instrument):
        """Records the threads the per-point phase ran on and the intra-op threads each had."""

        section = "where"

        def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
            seen.add(threading.get_ident())
            return {"threads": torch.get_num_threads()}

    with DEFAULT.added(Where()):
        parallel = to_host(DEFAULT.measure(snap, mon))
        workers = set(seen)
        with torch_single_threaded():  # nested: the registry then measures one call at a time
            serial = to_host(DEFAULT.measure(snap, mon))
    assert torch.get_num_threads() == 2
    assert workers and threading.get_ident() not in workers  # pool threads (one or both: a thread that is
    # idle when a call is queued takes it, so a fast one may take them all), never the caller
    assert [lay["threads"] for lay in parallel["where"]["layers"]] == [1, 1, 1]
    assert seen - workers == {threading.get_ident()}  # one at a time: in the caller's thread
    assert [lay["threads"] for lay in serial["where"]["layers"]] == [1, 1, 1]
    _close(parallel, serial)


def test_thread_count_restored_after_a_failing_instrument(two_threads: None) -> None:
    snap, mon = _snapshot()

    class Fails(Instrument):
        section = "fails"

        def measure_point(self, capture: Capture, monitor: Monitor) -> Any:
            raise ValueError(f"no statistic at {capture.point.name}")

    with DEFAULT.added(Fails()), pytest.raises(ValueError, match="no statistic at hidden"):
        DEFAULT.measure(snap, mon)
    assert torch.get_num_threads() == 2
    with torch_single_threaded() as cores:  # the lock was released
        assert cores == 2


@pytest.mark.skipif(not lapack.available(), reason="no LAPACK found beside numpy")
def test_self_parallel_work_inside_a_worker_runs_serially(two_threads: None) -> None:
    """An instrument whose measure_point calls the parallel eigen-solver would wait forever on the
    thread-count lock its own caller holds, if nesting were not recognised."""
    snap, mon = _snapshot()

    class Spectrum(Instrument):
        section = "spectrum"

        def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
            z = capture.z.double()
            return {"top": lapack.eigvalsh((z.T @ z).unsqueeze(0))[0, -1]}

    with DEFAULT.added(Spectrum()):
        out = to_host(DEFAULT.measure(snap, mon))
    for c, lay in zip(snap.points, out["spectrum"]["layers"], strict=True):
        expected = float(torch.linalg.svdvals(c.z.double())[0] ** 2)
        assert lay["top"] == pytest.approx(expected, rel=1e-9)


def test_parallel_map_keeps_order_and_raises() -> None:
    with torch_single_threaded() as cores:
        assert parallel_map(lambda v: v * v, list(range(20)), max(cores, 2)) == [v * v for v in range(20)]
        with pytest.raises(ZeroDivisionError):
            parallel_map(lambda v: 1 // v, [3, 2, 1, 0], 2)
