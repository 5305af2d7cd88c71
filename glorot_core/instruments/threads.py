"""Running independent CPU work on every core from Python threads, with torch single-threaded meanwhile.

Some work scales poorly over threads inside one call and well across calls: a 1000×1000 eigen-solve
is half matrix-vector work, so one single-threaded solve per core beats one multi-threaded solve at a
time (``instruments.lapack``). torch and ctypes release the GIL, so Python threads are enough.

torch's intra-op thread count is process-wide state: one caller at a time sets it to 1 and restores
it (:func:`torch_single_threaded`). Each worker thread also sets it for itself (:func:`parallel_map`):
OpenMP keeps the count per thread, and a thread that never set it would start with one thread per
core, two teams of OpenMP threads then competing for the same cores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_PROCESS_WIDE = threading.Lock()
_STATE = threading.local()  # .single: this thread already runs single-threaded work


@contextmanager
def torch_single_threaded() -> Iterator[int]:
    """Hold the process-wide thread-count lock with torch at one intra-op thread; yields the count
    there was (the cores the caller may use), restored on exit.

    Nested in another such block, or in a worker of :func:`parallel_map`, it yields 1 and changes
    nothing (so work that parallelises itself runs serially there instead of waiting on the lock)."""
    if getattr(_STATE, "single", False):
        yield 1
        return
    with _PROCESS_WIDE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        _STATE.single = True
        try:
            yield threads
        finally:
            _STATE.single = False
            torch.set_num_threads(threads)


def _worker_start() -> None:
    torch.set_num_threads(1)
    _STATE.single = True


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(item) for item in items]`` on ``workers`` threads, each torch-single-threaded, taking the
    items in order (put the longest first); call inside :func:`torch_single_threaded`. An exception
    in ``fn`` is raised here, once every item has run."""
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, initializer=_worker_start) as pool:
        return list(pool.map(fn, items))


__all__ = ["parallel_map", "torch_single_threaded"]
