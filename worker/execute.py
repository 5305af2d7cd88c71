"""Running one job, the same way in both modes (the embedded local runner and Celery workers).

:func:`execute_job` claims a job (``jobs.lifecycle.claim``) and :func:`run_claimed` runs a claimed
attempt to its end: the spec is read from the row, ``glorot_core.runner.run_experiment`` runs with a
:class:`worker.watcher.Watcher` beside it (heartbeat, progress, streamed metric rows, cancel flag,
soft time limit), and the outcome is written by one fenced transition: ``finish`` (SUCCEEDED with the
report and its series), ``fail`` (with the reason) or ``stop_cancelled``. Every write is fenced by the
attempt (docs/architecture.md, "The job lifecycle"): a run that lost its claim writes nothing more.

Database outages: the claim is retried on transient errors for up to :data:`CLAIM_RETRY_S` (then the
error propagates, and a Celery delivery goes back to the queue, ``worker.tasks``); reading the spec
and the terminal write are retried for ``db_retry_s`` (longer than a database restart), so a job that
finishes while the database restarts still ends SUCCEEDED on its first attempt. The watcher keeps
trying its heartbeat every tick meanwhile (``worker.watcher``).

Cancellation is cooperative: ``cancel_requested`` on the row → ``should_cancel()`` turns True →
glorot_core raises ``Cancelled`` between steps → CANCELLED. The soft time limit uses the same path and
ends FAILED with the reason.

Nothing here imports torch at module level (glorot_core's runner is imported when a job runs), so a
process that only supervises jobs never loads it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import lifecycle
from jobs.data_roots import resolve_data_root
from jobs.db import session_factory
from jobs.models import Job, JobState
from jobs.progress import JobProgress
from jobs.settings import Settings, get_settings
from jobs.transient import is_transient, retry_transient
from worker.watcher import Watcher

log = logging.getLogger("glorot.execute")

#: Longest time a claim is retried in the job's process before the delivery is handed back (seconds):
#: short, so that during a long outage a Celery worker returns the message to the queue rather than
#: sitting on it.
CLAIM_RETRY_S = 10.0


def default_worker_id() -> str:
    """``host:pid:thread``: enough to find the process that holds a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class ClaimUnavailable(Exception):
    """The database could not be reached to claim the job (a transient error, retried for
    :data:`CLAIM_RETRY_S`): nothing was claimed, and the caller should hand the delivery back."""


@dataclass(frozen=True)
class ExecutionResult:
    """What :func:`execute_job` did. ``claimed`` False: someone else had it (or it was not QUEUED);
    ``state`` is then the row's state as seen. ``fenced_out``: the run lost its claim and wrote nothing."""

    job_id: str
    claimed: bool
    state: JobState | None
    attempt: int | None = None
    error: str | None = None
    fenced_out: bool = False


def execute_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    factory: sessionmaker[Session] | None = None,
    worker_id: str | None = None,
) -> ExecutionResult:
    """Claim ``job_id`` and run it to a terminal state. Never raises for a failing job (it is FAILED
    with its error); returns without doing anything when the job is not claimable. Raises
    :class:`ClaimUnavailable` when the database stayed unreachable while claiming."""
    settings = settings or get_settings()
    factory = factory or session_factory(settings.resolved_database_url)
    worker_id = worker_id or default_worker_id()
    try:
        attempt = lifecycle.claim(factory, job_id, worker_id, retry_s=min(settings.db_retry_s, CLAIM_RETRY_S))
        holder = None if attempt is not None else retry_transient(
            lambda: lifecycle.holder(factory, job_id), timeout_s=CLAIM_RETRY_S, what=f"state of job {job_id}")
    except Exception as e:
        if is_transient(e):
            raise ClaimUnavailable(f"job {job_id}: database unreachable while claiming") from e
        raise
    if holder is not None:
        state = holder.state
        log.info("job %s: not claimed (state %s)", job_id, state)
        return ExecutionResult(job_id, claimed=False, state=state)
    log.info("job %s: attempt %d claimed by %s", job_id, attempt, worker_id)
    return run_claimed(factory, job_id, attempt, settings)


def run_claimed(factory: sessionmaker[Session], job_id: str, attempt: int, settings: Settings) -> ExecutionResult:
    """Run a job this process has claimed as ``attempt``, to its terminal write."""
    from glorot_core.errors import Cancelled, GlorotError
    from glorot_core.progress import Progress
    from glorot_core.report import metric_rows
    from glorot_core.runner import run_experiment
    from glorot_core.spec import DataSpec, validate_spec
    from worker.uploaded_files import fetch_uploads

    def read_spec() -> Any:
        with factory() as s:
            return s.execute(select(Job.spec, Job.resolved_spec, Job.tenant_id).where(Job.id == job_id)).one()

    job = retry_transient(read_spec, timeout_s=settings.db_retry_s, what=f"spec of job {job_id}")
    try:
        spec = validate_spec(job.resolved_spec or job.spec, max_parameters=settings.max_parameters)
    except ValidationError as e:  # checked at submit; only a changed cap or schema gets here
        return _fail(factory, job_id, attempt, f"spec no longer valid: {e}", settings)

    watcher = Watcher(factory, job_id, attempt, settings)

    def on_progress(p: Progress) -> None:
        watcher.set_progress(JobProgress.of(p.as_dict()))

    def on_snapshot(snap: dict[str, Any]) -> None:  # on the training thread: only queues the rows
        watcher.add_metric_rows(metric_rows({"snapshots": [snap]}))

    watcher.start()
    report: dict[str, Any] | None = None
    try:
        try:
            with tempfile.TemporaryDirectory(prefix="glorot-upload-") as folder:
                # Uploads the spec names, fetched (sha256-checked) into this job's process (worker.uploaded_files).
                files = fetch_uploads(factory, job.tenant_id, spec, Path(folder))
                # In the service data.root names a folder under the data dir (jobs.data_roots), never a path.
                if isinstance(spec.data, DataSpec):
                    spec = resolve_data_root(spec, settings)
                report = run_experiment(spec, progress=on_progress, should_cancel=watcher.should_stop,
                                        on_snapshot=on_snapshot, model_files=files)
        finally:
            # Before any terminal write: a run without results flushes its last streamed rows while
            # the job is still RUNNING; after a success lifecycle.finish rewrites the series anyway.
            watcher.stop(flush=report is None)
    except Cancelled:
        return _stopped(factory, job_id, attempt, watcher, settings)
    except GlorotError as e:  # DataUnavailable, SpecNotRunnable: a clean, user-facing reason
        return _fail(factory, job_id, attempt, f"{type(e).__name__}: {e}", settings)
    except Exception as e:  # a bug or a resource problem: the traceback is for the operator's log only
        cid = secrets.token_hex(8)
        log.error("job %s attempt %d failed [correlation id %s]", job_id, attempt, cid, exc_info=e)
        return _fail(factory, job_id, attempt, _tenant_error(e, cid), settings)
    if watcher.lost.is_set() or not lifecycle.finish(factory, job_id, attempt, report, metric_rows(report),
                                                     retry_s=settings.db_retry_s):
        log.warning("job %s: attempt %d finished but no longer holds the job; results dropped", job_id, attempt)
        return ExecutionResult(job_id, claimed=True, state=None, attempt=attempt, fenced_out=True)
    log.info("job %s: attempt %d SUCCEEDED", job_id, attempt)
    return ExecutionResult(job_id, claimed=True, state=JobState.SUCCEEDED, attempt=attempt)


def _stopped(factory: sessionmaker[Session], job_id: str, attempt: int, watcher: Watcher,
             settings: Settings) -> ExecutionResult:
    """The run raised ``Cancelled``: it lost its claim, was cancelled, or passed the soft time limit."""
    if watcher.lost.is_set():
        return ExecutionResult(job_id, claimed=True, state=None, attempt=attempt, fenced_out=True)
    if watcher.cancel.is_set():
        ok = lifecycle.stop_cancelled(factory, job_id, attempt, retry_s=settings.db_retry_s)
        return _result(job_id, attempt, JobState.CANCELLED, ok, None)
    return _fail(factory, job_id, attempt, f"soft time limit of {settings.job_soft_time_limit_s:g} s exceeded",
                 settings)


_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s'\"]*[\\/][^\s'\"]*")


def _tenant_error(e: Exception, correlation_id: str) -> str:
    """What a tenant reads of an unexpected failure: its kind and first line (file paths blanked, e.g. an
    allocator's "can't allocate memory" stays), no traceback, and the id under which the log has it."""
    lines = str(e).strip().splitlines()
    first = _PATH.sub("<path>", lines[0])[:300] if lines else ""
    return (f"internal error: {type(e).__name__}{': ' + first if first else ''} (correlation id {correlation_id}; "
            "the operator's log has the details)")


def _fail(factory: sessionmaker[Session], job_id: str, attempt: int, error: str, settings: Settings) -> ExecutionResult:
    ok = lifecycle.fail(factory, job_id, attempt, error, retry_s=settings.db_retry_s)
    return _result(job_id, attempt, JobState.FAILED, ok, error)


def _result(job_id: str, attempt: int, state: JobState, ok: bool, error: str | None) -> ExecutionResult:
    log.info("job %s: attempt %d %s%s", job_id, attempt, state.value, "" if ok else " (fenced out, not written)")
    return ExecutionResult(job_id, claimed=True, state=state if ok else None, attempt=attempt, error=error,
                           fenced_out=not ok)
