"""Celery tasks: ``run_job`` executes one job through the shared ``worker.execute`` path.

The message carries only the job id. Everything else (spec, attempt, state, cancel flag) is read from
the job row, and the claim there decides whether this delivery runs the job: a second delivery of the
same message (late acks, a sweeper re-dispatch, a Redis visibility-timeout redelivery) finds the job no
longer QUEUED and returns without doing anything.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task
from sqlalchemy.orm import sessionmaker

from jobs import lifecycle
from jobs.db import create_db_engine
from jobs.settings import get_settings
from worker.celery_app import app
from worker.execute import execute_job
from worker.limits import apply_job_limits

log = logging.getLogger(__name__)

RUN_JOB = "glorot.run_job"


class JobTask(Task):
    """Fails the job row when the worker parent sees the job's process die under it.

    ``on_failure`` runs in the worker's parent process for a hard time limit (the pool process was
    killed, so ``worker.execute`` never got to write anything). Other failures were already recorded by
    ``worker.execute`` inside the job's process; a lost process without a time limit (OOM kill, SIGKILL)
    is left to the reaper, which may re-run it.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded) and args:
            job_id = str(args[0])
            settings = get_settings()
            reason = f"hard time limit of {settings.job_hard_time_limit_s:g} s exceeded: the job's process was killed"
            # This is the worker's parent, which forks every job's process: use a private engine and
            # close it, so no pooled connection is inherited by the next child.
            engine = create_db_engine(settings.resolved_database_url)
            try:
                factory = sessionmaker(bind=engine, expire_on_commit=False)
                lifecycle.fail_running(factory, job_id, reason, worker_id=delivery_worker_id(task_id))
            except Exception:  # the reaper settles it later
                log.exception("could not fail job %s after its hard time limit", job_id)
            finally:
                engine.dispose()
        elif isinstance(exc, WorkerLostError):
            log.warning("job %s: worker process lost (%s); the reaper will settle it", args[0] if args else "?", exc)


def delivery_worker_id(task_id: str) -> str:
    """The ``worker_id`` a delivery claims a job under: this host and the message's task id, so the
    worker's parent process can tell that the RUNNING row is still held by the process it lost."""
    return f"{socket.gethostname()}:celery:{task_id}"


@app.task(name=RUN_JOB, base=JobTask, bind=True, ignore_result=True)
def run_job(self: Task, job_id: str) -> None:
    """Claim and run job ``job_id`` (a no-op when another delivery already claimed it).

    Each job runs in its own forked child (max_tasks_per_child=1), so the memory cap set here binds
    this job alone.
    """
    apply_job_limits(get_settings())
    execute_job(str(job_id), worker_id=delivery_worker_id(self.request.id))


def enqueue_job(job_id: str) -> None:
    """Publish a ``run_job`` message for ``job_id``. Call it only after the transaction that created or
    re-queued the job has committed, or the worker may look for a row it cannot see yet.

    Raises on a broker error; the caller decides (the API logs it and lets the sweeper dispatch later).
    """
    run_job.apply_async(
        args=[str(job_id)],
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )
