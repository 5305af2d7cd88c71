"""The prefork pool, replacing a lost pool process at once instead of within 5 seconds.

A pool process lives for many jobs and forks each job's own process (``worker.tasks.run_job``); it is
replaced only when it dies, which is what Celery's hard time limit does to it (killing the job's
process with it). Celery 5.7's asynchronous prefork pool does not always notice a pool process's exit
from its sentinel, and otherwise replaces it only on its ``maintain_pool`` timer, every 5 s: measured
here (when every job still ran in a pool process replaced after it), 3 of 10 back-to-back trivial
tasks waited 2.5–6.4 s for a process. Running that cheap check every 50 ms makes a replacement ready
about as soon as the previous one is gone (all 10 within 25 ms), so the next job does not wait on the
timer (benchmarks/bench_queue_latency.py). Everything else is the stock prefork pool, so time limits
and ``terminate`` behave as documented.
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
