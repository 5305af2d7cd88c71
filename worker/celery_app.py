"""The Celery application for long GPU jobs, configured from the service settings.

Start a worker with ``glorot worker`` (or ``celery -A worker.celery_app worker``). The broker message
carries only a job id; the job row in the database is the truth, so there is no result backend and no
caller ever reads an ``AsyncResult`` (Celery answers PENDING for any unknown id).

Every setting below answers a known failure of Celery with long jobs (see docs/deploy.md):

* ``task_acks_late`` + ``worker_prefetch_multiplier=1`` + ``worker_disable_prefetch``: a worker holds at
  most the one message it is running, acknowledged only when the job is over; a dead worker loses no
  queued message it had prefetched (celery#7924). Late acks mean a message can arrive twice: the
  conditional claim in ``worker.execute`` makes the second delivery a no-op.
* ``task_reject_on_worker_lost``: a pool process killed mid-job puts its message back. It is not
  reliable on Redis (celery#3541), so the heartbeat reaper is the real guarantee.
* ``task_soft_time_limit`` / ``task_time_limit`` from the settings: the job's own process stops itself at
  the soft limit (its watcher, the same ``job_soft_time_limit_s``; it fails with a reason); the hard
  limit kills the pool process, and the job's process dies with it (``JobTask.on_failure`` then fails
  the row). Both only work in the prefork pool: ``worker.pool.PromptTaskPool`` is the prefork pool,
  checking every 50 ms (not 5 s) for a pool process to replace, so a killed one is back at once.
* ``broker_transport_options.visibility_timeout`` above the hard limit: Redis re-delivers an unacked
  message after it, so a shorter one would start a running job again and again (celery#5935).
* ``worker_concurrency=1``: one job per GPU. Each job runs in a process of its own, forked by the
  long-lived pool process from what the worker's parent preloaded (``worker.tasks.run_job``), so no
  job pays for importing torch or for Celery replacing its pool process (``worker_max_tasks_per_child``
  stays unset). Neither the parent nor the pool process touches CUDA (checked at start and before each
  fork), so every job's process can initialise it (pytorch#40403, #68861). Pin one worker to each GPU
  with ``CUDA_VISIBLE_DEVICES``.
* ``worker_cancel_long_running_tasks_on_connection_loss=False``: a broker hiccup must not kill a job
  that is writing to the database; Redis without persistence would not redeliver it anyway.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

from celery import Celery, bootsteps, signals

from jobs.settings import Settings, get_settings
from worker.forkserver import preload_job_modules

log = logging.getLogger(__name__)

#: Seconds the Redis visibility timeout exceeds the hard time limit by, at least.
VISIBILITY_MARGIN_S = 600


def visibility_timeout_for(hard_limit_s: float) -> int:
    """Redis visibility timeout for a hard time limit: 25 % above it and at least 10 minutes more.

    A message is re-delivered only when its job can no longer be running (the hard limit has killed
    it); dead workers are found sooner by the heartbeat reaper, which does not wait for this.
    """
    return int(max(hard_limit_s * 1.25, hard_limit_s + VISIBILITY_MARGIN_S))


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for these settings (a plain dict, so tests can check it)."""
    hard = float(settings.job_hard_time_limit_s)
    soft = float(settings.job_soft_time_limit_s)
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker outlives any broker outage
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout_for(hard),
            # Find dead sockets (e.g. after a Redis restart) instead of waiting on them forever.
            "health_check_interval": 10,
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
        },
        # The job row is the truth: no result backend, no stored results.
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_default_queue": settings.celery_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_acks_on_failure_or_timeout": True,
        "task_reject_on_worker_lost": True,
        "task_soft_time_limit": soft,
        "task_time_limit": hard,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,
        "worker_pool": "worker.pool:PromptTaskPool",  # prefork, replacing job processes promptly
        "worker_concurrency": 1,
        "worker_max_tasks_per_child": None,  # the pool process forks each job; it is not the job's process
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (default: the process's settings)."""
    settings = settings or get_settings()
    app = Celery("glorot", include=["worker.tasks"])
    app.conf.update(celery_config(settings))
    app.steps["worker"].add(MaintenanceStep)
    return app


def start_maintenance_process(parent_pid: int) -> subprocess.Popen[bytes]:
    """Start ``python -m worker.maintenance --parent-pid PID`` with this process's environment."""
    cmd = [sys.executable, "-m", "worker.maintenance", "--parent-pid", str(parent_pid)]
    proc = subprocess.Popen(cmd, start_new_session=False)
    log.info("maintenance process %d started", proc.pid)
    return proc


def stop_maintenance_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Ask the maintenance process to stop (SIGTERM); kill it if it has not stopped in ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class MaintenanceStep(bootsteps.StartStopStep):
    """Runs the sweeper and the reaper beside the worker, in a *spawned* process.

    Not a thread in the worker's parent process: the prefork pool forks its pool processes from there
    (and each pool process forks every job), and a fork taken while a thread holds a lock (a connection
    pool, a socket) can deadlock the child. Not Celery beat either: beat would put the sweep behind hour-long
    GPU jobs in the same queue. A spawned process shares nothing with the forking parent; it exits when
    the worker does (and on its own when the worker dies). Every worker runs one: the reaper's updates
    are conditional and the sweeper advances each job's ``dispatched_at`` by a compare-and-set in the
    database before publishing, so many together act once.
    Disabled with ``GLOROT_WORKER_MAINTENANCE=0`` (``glorot worker --no-maintenance``).
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.proc: Any = None

    def start(self, parent: Any) -> None:
        if os.environ.get("GLOROT_WORKER_MAINTENANCE", "1") in {"0", "false", "no"}:
            log.info("maintenance (sweeper, reaper) disabled in this worker")
            return
        self.proc = start_maintenance_process(parent_pid=os.getpid())

    def stop(self, parent: Any) -> None:
        if self.proc is not None:
            stop_maintenance_process(self.proc)
            self.proc = None


@signals.worker_init.connect
def _preload_and_check_cuda(**_: Any) -> None:
    """Import the job modules (``worker.forkserver.JOB_MODULES``, torch included) once in the worker's
    parent, so that its pool processes and the job processes they fork start with them loaded; then
    refuse to start if CUDA was initialised: forked children could not use the GPU (pytorch#40403)."""
    preload_job_modules()


app = make_app()
