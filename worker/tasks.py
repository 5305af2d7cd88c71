"""Celery tasks: ``run_job`` executes one job through the shared ``worker.execute`` path.

The message carries only the job id. Everything else (spec, attempt, state, cancel flag) is read from
the job row, and the claim there decides whether this delivery runs the job: a second delivery of the
same message (late acks, a sweeper re-dispatch, a Redis visibility-timeout redelivery) finds the job no
longer QUEUED and returns without doing anything.

Each delivery runs in a Celery pool process that lives for many jobs; the job itself runs in a process
of its own that the task forks from there (``worker.forkserver.fork_job``): the pool process inherited
torch and glorot_core from the worker's parent (preloaded, CUDA untouched), so the job's process starts
in milliseconds, applies the job's memory cap to itself alone, initialises CUDA (if it uses the GPU)
after the fork, and dies with the pool process when Celery's hard time limit kills that.

A delivery whose claim failed because the database could not be reached (the job's process exits with
:data:`EX_TEMPFAIL`) is not acknowledged as done: after :data:`REQUEUE_DELAY_S` it is rejected with
``requeue=True``, so the message goes back to the queue and is tried again, instead of an idle worker
emptying the queue during a database outage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from sqlalchemy.orm import sessionmaker

from jobs import fairness, lifecycle
from jobs.db import create_db_engine, session_factory
from jobs.settings import get_settings
from worker.celery_app import app
from worker.execute import ClaimUnavailable, execute_job
from worker.forkserver import check_cuda_untouched, describe_exit, fork_job
from worker.limits import apply_job_limits

log = logging.getLogger(__name__)

RUN_JOB = "glorot.run_job"
#: Exit status of a job's process that could not claim its job because the database was unreachable
#: (sysexits.h ``EX_TEMPFAIL``): the delivery goes back to the queue.
EX_TEMPFAIL = 75
#: Pause before a delivery whose claim failed goes back to the queue (seconds), so that during an outage
#: the worker does not spin through the queue.
REQUEUE_DELAY_S = 2.0


class JobTask(Task):
    """Fails the job row when the worker parent sees the job's process die under it.

    ``on_failure`` runs in the worker's parent process for a hard time limit (the pool process was
    killed, and the job's process with it, so ``worker.execute`` never got to write anything). Other
    failures were already recorded by ``worker.execute`` inside the job's process, or by ``run_job``
    when the job's process died; a lost pool process without a time limit (OOM kill, SIGKILL) is left
    to the reaper, which may re-run it.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded) and args:
            limit = get_settings().job_hard_time_limit_s
            reason = f"hard time limit of {limit:g} s exceeded: the job's process was killed"
            fail_if_held(str(args[0]), task_id, reason)
        elif isinstance(exc, WorkerLostError):
            log.warning("job %s: worker process lost (%s); the reaper will settle it", args[0] if args else "?", exc)


def delivery_worker_id(task_id: str) -> str:
    """The ``worker_id`` a delivery claims a job under: this host and the message's task id, so the
    worker's parent process can tell that the RUNNING row is still held by the process it lost."""
    return f"{socket.gethostname()}:celery:{task_id}"


def fail_if_held(job_id: str, task_id: str, reason: str) -> None:
    """FAILED with ``reason`` if the delivery ``task_id`` still holds the RUNNING job (fenced).

    Runs in a process that forks (the worker's parent, a pool process): a private engine, closed
    at once, so no pooled connection is inherited by a later child."""
    engine = create_db_engine(get_settings().resolved_database_url)
    try:
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        worker_id = delivery_worker_id(task_id)  # the delivery may hold another job than its message's
        lifecycle.fail_running(factory, fairness.held_by(factory, worker_id) or job_id, reason, worker_id=worker_id)
    except Exception:  # the reaper settles it later
        log.exception("could not fail job %s (%s)", job_id, reason)
    finally:
        engine.dispose()


def _due_job(job_id: str) -> str:
    """The job this delivery runs: ``job_id``, or the job of the tenant that is due (``jobs.fairness``),
    in which case ``job_id``'s message goes back to the tail of the queue; if the database cannot tell,
    the delivered job.

    The pool process keeps one engine for this across deliveries (``jobs.db.session_factory``, keyed by
    pid): a new engine per delivery cost 45–70 ms of every job's start. The job processes forked from
    here never use it (their pid differs, so they make their own), and psycopg does not close a
    connection that a forked child inherited, so the parent's connections stay intact."""
    try:
        due = fairness.due_instead(session_factory(get_settings().resolved_database_url), job_id)
    except Exception as e:  # the claim in the job's process meets the same outage and reports it
        log.warning("job %s: fair pick unavailable (%s); running the delivered job", job_id, e)
        return job_id
    if due != job_id:
        try:
            enqueue_job(job_id)
        except Exception as e:  # the skipped job would lose its message: run it now instead
            log.warning("job %s: could not re-queue its message (%s); running it", job_id, e)
            return job_id
        log.info("job %s: its tenant is not due; running job %s, message re-queued", job_id, due)
    return due


def _job_process(job_id: str, worker_id: str) -> None:
    """The job's own process: cap its memory, then claim and run the job."""
    apply_job_limits(get_settings())
    try:
        execute_job(job_id, worker_id=worker_id)
    except ClaimUnavailable as e:
        log.warning("%s; the message goes back to the queue", e)
        sys.exit(EX_TEMPFAIL)


def _wait(pid: int) -> int:
    """Wait for the job's process; returns its wait status.

    Celery's soft time limit raises in this (the pool) process: the job's own watcher enforces the same
    limit, so keep waiting. Anything else (the pool process being stopped) kills the job first."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except SoftTimeLimitExceeded:
            log.warning("job process %d: soft time limit reached; the job stops itself", pid)
        except BaseException:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise


@app.task(name=RUN_JOB, base=JobTask, bind=True, ignore_result=True)
def run_job(self: Task, job_id: str) -> None:
    """Claim and run job ``job_id`` in a process of its own (a no-op when another delivery already
    claimed it). A job process that dies without finishing (a signal, a crash) FAILS the job with
    how it ended, if this delivery still holds it. A claim that failed for want of the database puts
    the message back in the queue (``Reject(requeue=True)``)."""
    check_cuda_untouched()  # this process forks every job: CUDA belongs in the job's process only
    due = _due_job(str(job_id))
    pid = fork_job(_job_process, (due, delivery_worker_id(self.request.id)))
    status = _wait(pid)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EX_TEMPFAIL:
        time.sleep(REQUEUE_DELAY_S)
        raise Reject(f"job {job_id}: database unreachable, not claimed", requeue=True)
    if status != 0:
        fail_if_held(str(job_id), self.request.id, f"the job process {describe_exit(status)} without finishing the job")


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
