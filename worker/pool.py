"""The prefork pool, replacing each job's process at once instead of within 5 seconds.

With ``worker_max_tasks_per_child=1`` every job runs in a fresh process forked from the worker's
parent (so CUDA is first initialised in that child, never before a fork). Celery 5.7's asynchronous
prefork pool does not always notice the child's exit from its sentinel, and otherwise replaces it
only on its ``maintain_pool`` timer, every 5 s: measured here, 3 of 10 back-to-back trivial tasks
waited 2.5–6.4 s for a process. Running that cheap check every 50 ms makes a replacement process
ready about as soon as the previous job ends (all 10 within 25 ms), so an idle worker picks up the
next job at once (benchmarks/bench_queue_latency.py). Everything else is the stock prefork pool, so
time limits, ``max_tasks_per_child`` and ``terminate`` behave as documented.
"""

from __future__ import annotations

from collections.abc import Callable

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

#: Seconds between checks for exited pool processes (Celery's default: 5.0).
MAINTAIN_INTERVAL_S = 0.05


class PromptAsynPool(AsynPool):
    """``AsynPool`` whose pool-maintenance timer runs every :data:`MAINTAIN_INTERVAL_S`."""

    @property
    def timers(self) -> dict[Callable[[], None], float]:
        return {self.maintain_pool: MAINTAIN_INTERVAL_S}


class PromptTaskPool(TaskPool):
    """The prefork ``TaskPool`` with :class:`PromptAsynPool`; ``worker_pool = "worker.pool:PromptTaskPool"``."""

    Pool = PromptAsynPool
