"""Job execution shared by both modes (the embedded local runner and Celery workers).

The job row is the truth and the attempt number is the fencing token:

* **Claim**: ``UPDATE jobs SET state='RUNNING', attempt=attempt+1, worker_id=…, heartbeat_at=now
  WHERE id=:id AND state='QUEUED'``. Exactly one claimant sees one row updated; a message delivered
  twice, or a runner racing a Celery worker, finds nothing to claim and does nothing.
* **Fencing**: every later write by the claimant (heartbeat, progress, streamed metric points, the
  final state, the report and metric series) is ``… WHERE id=:id AND attempt=:mine AND
  state='RUNNING'``. If the reaper has re-queued the job (attempt moved on) or it went terminal, the
  write touches no row, the run notices, stops, and writes nothing more. Results and the SUCCEEDED
  state commit in one transaction, so a report exists iff the job SUCCEEDED, written by the attempt
  that the row says ran it.
* **Terminal states never change**: only RUNNING (or QUEUED, for a cancel) rows are ever updated.
* **Live metric series**: each snapshot's metric rows are handed (``on_snapshot``, on the training
  thread, no I/O) to the watcher, which writes what has accumulated at most every
  ``progress_interval_s``, in one transaction that starts with the fenced heartbeat UPDATE (which also
  locks the job row): a fenced-out attempt writes no point. Points are upserted on (series, step), so a
  retried batch is harmless. A claim clears the job's series in the claim's own transaction, so a
  re-run never mixes its points with a dead attempt's: the series are always the current attempt's.
  At SUCCEEDED, ``store_results`` deletes the job's series and writes the report's, in the transaction
  that writes the state and the report: the final series are exactly the report's. A FAILED or
  CANCELLED job keeps what was streamed (the watcher flushes its last rows before the terminal write).
* **Heartbeat and progress**: a watcher thread beside the run writes the heartbeat every
  ``heartbeat_interval_s`` and the latest progress at most every ``progress_interval_s`` (~1/s), and
  reads ``cancel_requested`` every ``cancel_poll_interval_s``. The training loop never waits on the
  database: its callbacks only set fields that the watcher reads.
* **Cancellation** is cooperative: ``cancel_requested`` on the row → ``should_cancel()`` turns True →
  glorot_core raises ``Cancelled`` between steps → CANCELLED. The soft time limit uses the same path
  and ends FAILED with the reason.
* **Reaper**: RUNNING rows with a heartbeat older than ``reaper_stale_after_s`` have lost their worker:
  re-queued while ``attempt < max_attempts``, else FAILED with the reason (CANCELLED if a cancel was
  pending). Each settlement is a conditional UPDATE, so many reapers together act once.

Nothing here imports torch at module level: the API process imports this module (for the reaper in
the local runner) and must never touch CUDA before a fork.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Update, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.db import session_factory, transaction
from jobs.models import Job, JobState, MetricPoint, MetricSeries, Report, utcnow
from jobs.settings import Settings, get_settings
from glorot_core.json_numbers import json_safe

log = logging.getLogger("glorot.execute")

#: Metric points per INSERT statement (executemany batches; MLflow's row-by-row logging was 70× slower).
METRIC_BATCH = 5000
#: Longest error text stored on a job.
MAX_ERROR_CHARS = 4000
#: Streamed metric rows a watcher holds while the database is unreachable; beyond this new rows are
#: dropped (a SUCCEEDED job still gets every row from its report).
MAX_PENDING_METRIC_ROWS = 2_000_000

MetricRow = tuple[int, int, str, float]

RUNNING = JobState.RUNNING.value
QUEUED = JobState.QUEUED.value


def default_worker_id() -> str:
    """``host:pid:thread`` — enough to find the process that holds a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass(frozen=True)
class ExecutionResult:
    """What :func:`execute_job` did. ``claimed`` False: someone else had it (or it was not QUEUED);
    ``state`` is then the row's state as seen. ``fenced_out``: the run lost its claim and wrote nothing."""

    job_id: str
    claimed: bool
    state: str | None
    attempt: int | None = None
    error: str | None = None
    fenced_out: bool = False


def _fenced(job_id: str, attempt: int) -> Update:
    """An UPDATE that only touches the row while ``attempt`` still owns it."""
    return (
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.state == RUNNING)
        .execution_options(synchronize_session=False)
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# ---------------------------------------------------------------------------------------------- claim


def claim_job(factory: sessionmaker[Session], job_id: str, worker_id: str) -> int | None:
    """QUEUED → RUNNING with attempt + 1; returns the new attempt, or None when not claimable."""
    now = utcnow()
    with transaction(factory) as s:
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == QUEUED)
            .values(
                state=RUNNING, attempt=Job.attempt + 1, worker_id=worker_id, started_at=now, heartbeat_at=now,
                progress={"fraction": 0.0, "step": 0, "total_steps": None, "phase": "setup", "message": "claimed"},
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        # We hold the row (Postgres row lock / SQLite write lock) until commit: this is our attempt.
        attempt = int(s.execute(select(Job.attempt).where(Job.id == job_id)).scalar_one())
        if attempt > 1:  # a re-run: the series streamed by the dead attempt go, with the claim
            _delete_metric_series(s, job_id)
        return attempt


def next_queued_job_ids(factory: sessionmaker[Session], limit: int = 10) -> list[str]:
    """Oldest QUEUED job ids (the local runner's poll)."""
    with factory() as s:
        return list(
            s.execute(select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at, Job.id).limit(limit)).scalars()
        )


# ------------------------------------------------------------------------------------ terminal writes


def finish_job(
    factory: sessionmaker[Session], job_id: str, attempt: int, state: JobState, *, error: str | None = None,
    message: str = "",
) -> bool:
    """Move the claimed attempt to a terminal ``state`` (FAILED / CANCELLED); False if fenced out."""
    if state not in (JobState.FAILED, JobState.CANCELLED):
        raise ValueError("finish_job writes FAILED or CANCELLED; results go through store_results")
    now = utcnow()
    with transaction(factory) as s:
        current = s.execute(select(Job.progress).where(Job.id == job_id)).scalar_one_or_none() or {}
        progress = {**current, "phase": "done", "message": message or state.value.lower()}
        res = s.execute(
            _fenced(job_id, attempt).values(
                state=state.value, error=_clip(error) if error else None, finished_at=now, heartbeat_at=now,
                progress=progress,
            )
        )
        return res.rowcount == 1  # type: ignore[attr-defined]


def fail_job(factory: sessionmaker[Session], job_id: str, attempt: int, error: str) -> bool:
    """FAILED with ``error`` if ``attempt`` still holds the job (e.g. its process was killed)."""
    return finish_job(factory, job_id, attempt, JobState.FAILED, error=error, message="failed")


def fail_running_job(factory: sessionmaker[Session], job_id: str, error: str, *, worker_id: str | None = None) -> bool:
    """FAILED for whatever attempt is RUNNING now (optionally only if ``worker_id`` holds it).

    For a supervisor that saw its job process die (Celery's hard time limit, the local runner's child
    exiting) and does not know the attempt the child claimed.
    """
    with factory() as s:
        row = s.execute(select(Job.attempt, Job.state, Job.worker_id).where(Job.id == job_id)).one_or_none()
    if row is None or row.state != RUNNING or (worker_id is not None and row.worker_id != worker_id):
        return False
    return fail_job(factory, job_id, row.attempt, error)


def requeue_job(factory: sessionmaker[Session], job_id: str, attempt: int, reason: str) -> bool:
    """RUNNING → QUEUED for ``attempt`` (its process was stopped on purpose); the next claim is a new attempt."""
    with transaction(factory) as s:
        res = s.execute(
            _fenced(job_id, attempt).values(
                state=QUEUED, worker_id=None, heartbeat_at=None, dispatched_at=utcnow(),
                progress={"fraction": 0.0, "step": 0, "total_steps": None, "phase": "queued",
                          "message": f"re-queued: {reason}"},
            )
        )
        return res.rowcount == 1  # type: ignore[attr-defined]


def store_results(
    factory: sessionmaker[Session], job_id: str, attempt: int, report: dict[str, Any], rows: Iterable[MetricRow],
) -> bool:
    """SUCCEEDED + the report + the metric series, in one transaction, only if ``attempt`` is current.

    The series streamed during the run are replaced by ``rows`` (the report's), so the job ends with
    exactly the report's series whatever was streamed before."""
    now = utcnow()
    body = json_safe(report)  # run_experiment's reports already are; reports from elsewhere may not be
    with transaction(factory) as s:
        steps = max((snap.get("step", 0) for snap in body.get("snapshots", [])), default=0)
        res = s.execute(
            _fenced(job_id, attempt).values(
                state=JobState.SUCCEEDED.value, finished_at=now, heartbeat_at=now, error=None,
                progress={"fraction": 1.0, "step": steps, "total_steps": body.get("spec", {}).get("train", {}).get(
                    "steps"), "phase": "done", "message": "succeeded"},
            )
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return False  # fenced out; nothing was written
        s.add(Report(job_id=job_id, attempt=attempt, body=body, created_at=now))
        _delete_metric_series(s, job_id)  # what this attempt streamed: replaced by the report's rows
        _write_metric_rows(s, job_id, rows)
    return True


def _delete_metric_series(s: Session, job_id: str) -> None:
    """Every series of the job and their points (explicitly: no reliance on ON DELETE CASCADE)."""
    series = select(MetricSeries.id).where(MetricSeries.job_id == job_id)
    s.execute(delete(MetricPoint).where(MetricPoint.series_id.in_(series)).execution_options(synchronize_session=False))
    s.execute(delete(MetricSeries).where(MetricSeries.job_id == job_id).execution_options(synchronize_session=False))


def _dialect_insert(s: Session, model: type[Any]) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support (PostgreSQL and SQLite, the two databases we run on)."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model)
    raise NotImplementedError(f"streaming metric series needs ON CONFLICT; {name} is not supported")


def _write_metric_rows(s: Session, job_id: str, rows: Iterable[MetricRow], *, upsert: bool = False) -> None:
    """Series first (one row per layer × statistic), then points in batches of METRIC_BATCH.

    ``upsert`` (streaming): series that exist are kept and a point already there takes the new value,
    so a batch may be written twice (a commit whose outcome was lost). Without it (the final write,
    after the job's series were deleted) plain INSERTs.
    """
    points: dict[tuple[int, str], dict[int, float | None]] = {}
    for step, layer, statistic, value in rows:
        v = float(value)
        points.setdefault((int(layer), str(statistic)[:64]), {})[int(step)] = v if math.isfinite(v) else None
    if not points:
        return
    series_rows = [{"job_id": job_id, "layer": k[0], "statistic": k[1]} for k in points]
    point_insert: Any = insert(MetricPoint)
    if upsert:
        s.execute(_dialect_insert(s, MetricSeries).on_conflict_do_nothing(
            index_elements=["job_id", "layer", "statistic"]), series_rows)
        point_insert = _dialect_insert(s, MetricPoint)
        point_insert = point_insert.on_conflict_do_update(
            index_elements=["series_id", "step"], set_={"value": point_insert.excluded.value})
    else:
        s.execute(insert(MetricSeries), series_rows)
    ids = {
        (layer, stat): sid
        for sid, layer, stat in s.execute(
            select(MetricSeries.id, MetricSeries.layer, MetricSeries.statistic).where(MetricSeries.job_id == job_id)
        )
    }
    batch: list[dict[str, Any]] = []
    for key, series in points.items():
        sid = ids[key]
        for step, value in series.items():
            batch.append({"series_id": sid, "step": step, "value": value})
            if len(batch) >= METRIC_BATCH:
                s.execute(point_insert, batch)
                batch = []
    if batch:
        s.execute(point_insert, batch)


# ------------------------------------------------------------------------------------------- the run


class _Watcher(threading.Thread):
    """Beside the run: heartbeat, progress (throttled), streamed metric rows, cancel flag, fencing
    check, soft time limit."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, attempt: int, settings: Settings) -> None:
        super().__init__(name=f"glorot-watch-{job_id[:8]}", daemon=True)
        self.factory, self.job_id, self.attempt, self.settings = factory, job_id, attempt, settings
        self.stop_event = threading.Event()
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.started = time.monotonic()
        self._pending: dict[str, Any] | None = None
        self._rows: list[MetricRow] = []
        self._dropped_rows = 0
        self._flush_on_stop = False
        self._lock = threading.Lock()

    # Called from the training thread: never blocks on the database.
    def set_progress(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self._pending = progress

    def add_metric_rows(self, rows: Iterable[MetricRow]) -> None:
        """Queue one snapshot's metric rows for the next write (all of them, or none when over the cap)."""
        batch = list(rows)
        with self._lock:
            if len(self._rows) + len(batch) > MAX_PENDING_METRIC_ROWS:
                self._dropped_rows += len(batch)
                return
            self._rows.extend(batch)

    @property
    def over_soft_limit(self) -> bool:
        return time.monotonic() - self.started > self.settings.job_soft_time_limit_s

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set() or self.over_soft_limit

    def stop(self, *, flush: bool) -> None:
        """End the loop and wait for it; ``flush``: first write the metric rows still queued (a run that
        ends without results keeps its series; after a success ``store_results`` rewrites them all)."""
        self._flush_on_stop = flush
        self.stop_event.set()
        self.join(timeout=10)

    def _take_rows(self) -> list[MetricRow]:
        with self._lock:
            rows, self._rows = self._rows, []
            dropped, self._dropped_rows = self._dropped_rows, 0
        if dropped:
            log.warning("job %s: %d streamed metric rows dropped (database unreachable too long)", self.job_id, dropped)
        return rows

    def _write(self, values: dict[str, Any], rows: list[MetricRow]) -> bool:
        """One transaction: the fenced UPDATE (heartbeat, progress), then, only if it touched the row,
        the queued metric rows. False when this attempt no longer holds the job (nothing written).
        On a database error the rows go back to the queue and the error propagates."""
        try:
            with transaction(self.factory) as s:
                res = s.execute(_fenced(self.job_id, self.attempt).values(**values))
                owned = res.rowcount == 1  # type: ignore[attr-defined]
                if owned and rows:
                    _write_metric_rows(s, self.job_id, rows, upsert=True)
        except Exception:
            if rows:
                with self._lock:
                    self._rows[:0] = rows
            raise
        return owned

    def run(self) -> None:
        st = self.settings
        last_beat = last_progress = last_rows = time.monotonic()
        tick = min(st.cancel_poll_interval_s, st.heartbeat_interval_s, max(st.progress_interval_s, 0.05))
        while not self.stop_event.wait(tick):
            now = time.monotonic()
            try:
                with self._lock:
                    pending = self._pending
                    have_rows = bool(self._rows)
                write_progress = pending is not None and now - last_progress >= st.progress_interval_s
                write_rows = have_rows and now - last_rows >= st.progress_interval_s
                if write_progress or write_rows or now - last_beat >= st.heartbeat_interval_s:
                    values: dict[str, Any] = {"heartbeat_at": utcnow()}
                    if write_progress:
                        values["progress"] = pending
                        with self._lock:
                            if self._pending is pending:
                                self._pending = None
                        last_progress = now
                    rows = self._take_rows() if write_rows else []
                    if rows:
                        last_rows = now
                    owned = self._write(values, rows)
                    last_beat = now
                    if not owned:
                        self._check_ownership()
                with self.factory() as s:
                    row = s.execute(
                        select(Job.state, Job.attempt, Job.cancel_requested).where(Job.id == self.job_id)
                    ).one_or_none()
                if row is None or row.state != RUNNING or row.attempt != self.attempt:
                    self.lost.set()
                elif row.cancel_requested:
                    self.cancel.set()
            except Exception:  # a database hiccup: keep trying; the reaper is the backstop
                log.exception("job %s: watcher could not reach the database", self.job_id)
        if self._flush_on_stop and not self.lost.is_set():
            try:
                rows = self._take_rows()
                if rows and not self._write({"heartbeat_at": utcnow()}, rows):
                    self._check_ownership()
            except Exception:
                log.exception("job %s: could not write the last streamed metric rows", self.job_id)

    def _check_ownership(self) -> None:
        with self.factory() as s:
            row = s.execute(select(Job.state, Job.attempt).where(Job.id == self.job_id)).one_or_none()
        if row is None or row.state != RUNNING or row.attempt != self.attempt:
            log.warning("job %s: attempt %d lost its claim (now %s)", self.job_id, self.attempt, row)
            self.lost.set()


def execute_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    factory: sessionmaker[Session] | None = None,
    worker_id: str | None = None,
) -> ExecutionResult:
    """Claim ``job_id`` and run it to a terminal state. Never raises for a failing job (it is FAILED
    with its error); returns without doing anything when the job is not claimable."""
    settings = settings or get_settings()
    factory = factory or session_factory(settings.resolved_database_url)
    worker_id = worker_id or default_worker_id()
    attempt = claim_job(factory, job_id, worker_id)
    if attempt is None:
        with factory() as s:
            state = s.execute(select(Job.state).where(Job.id == job_id)).scalar_one_or_none()
        log.info("job %s: not claimed (state %s)", job_id, state)
        return ExecutionResult(job_id, claimed=False, state=state)
    log.info("job %s: attempt %d claimed by %s", job_id, attempt, worker_id)
    return run_claimed(factory, job_id, attempt, settings)


def run_claimed(factory: sessionmaker[Session], job_id: str, attempt: int, settings: Settings) -> ExecutionResult:
    """Run a job this process has claimed as ``attempt`` (see module docstring for the protocol)."""
    from glorot_core.errors import Cancelled, GlorotError
    from glorot_core.progress import Progress
    from glorot_core.spec import validate_spec

    with factory() as s:
        job = s.execute(select(Job.spec, Job.resolved_spec).where(Job.id == job_id)).one()
    try:
        spec = validate_spec(job.resolved_spec or job.spec, max_parameters=settings.max_parameters)
    except ValidationError as e:  # checked at submit; only a changed cap or schema gets here
        return _finish(factory, job_id, attempt, JobState.FAILED, f"spec no longer valid: {e}")

    watcher = _Watcher(factory, job_id, attempt, settings)

    def on_progress(p: Progress) -> None:
        watcher.set_progress(p.as_dict())

    def on_snapshot(snap: dict[str, Any]) -> None:  # on the training thread: only queues the rows
        watcher.add_metric_rows(metric_rows({"snapshots": [snap]}))

    watcher.start()
    report: dict[str, Any] | None = None
    try:
        try:
            from glorot_core.report import metric_rows
            from glorot_core.runner import run_experiment

            report = run_experiment(spec, progress=on_progress, should_cancel=watcher.should_stop,
                                    on_snapshot=on_snapshot)
        finally:
            # Before any terminal write: a run without results flushes its last streamed rows while
            # the job is still RUNNING; after a success store_results rewrites the series anyway.
            watcher.stop(flush=report is None)
    except Cancelled:
        if watcher.lost.is_set():
            return ExecutionResult(job_id, claimed=True, state=None, attempt=attempt, fenced_out=True)
        if watcher.cancel.is_set():
            return _finish(factory, job_id, attempt, JobState.CANCELLED, None)
        return _finish(factory, job_id, attempt, JobState.FAILED,
                       f"soft time limit of {settings.job_soft_time_limit_s:g} s exceeded")
    except GlorotError as e:  # DataUnavailable, SpecNotRunnable: a clean, user-facing reason
        return _finish(factory, job_id, attempt, JobState.FAILED, f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug or a resource problem: keep the traceback's tail for the operator
        log.exception("job %s attempt %d failed", job_id, attempt)
        tb = "".join(traceback.format_exception(e, limit=-3))
        return _finish(factory, job_id, attempt, JobState.FAILED, f"{type(e).__name__}: {e}\n{tb}")
    assert report is not None
    if watcher.lost.is_set() or not store_results(factory, job_id, attempt, report, metric_rows(report)):
        log.warning("job %s: attempt %d finished but no longer holds the job; results dropped", job_id, attempt)
        return ExecutionResult(job_id, claimed=True, state=None, attempt=attempt, fenced_out=True)
    log.info("job %s: attempt %d SUCCEEDED", job_id, attempt)
    return ExecutionResult(job_id, claimed=True, state=JobState.SUCCEEDED.value, attempt=attempt)


def _finish(factory: sessionmaker[Session], job_id: str, attempt: int, state: JobState,
            error: str | None) -> ExecutionResult:
    ok = finish_job(factory, job_id, attempt, state, error=error)
    log.info("job %s: attempt %d %s%s", job_id, attempt, state.value, "" if ok else " (fenced out, not written)")
    return ExecutionResult(job_id, claimed=True, state=state.value if ok else None, attempt=attempt,
                           error=error, fenced_out=not ok)


# ---------------------------------------------------------------------------------------- the reaper


def reap_stale_jobs(factory: sessionmaker[Session], settings: Settings, *, now: datetime | None = None) -> list[str]:
    """Settle RUNNING jobs whose heartbeat is older than ``reaper_stale_after_s``; returns the ids it
    re-queued (the caller dispatches them in Celery mode; the local runner just polls).

    attempt < max_attempts → QUEUED again (the next claim is attempt + 1; the dead attempt is fenced
    out); otherwise FAILED with the reason; a job whose cancel was pending → CANCELLED.
    """
    now = now or utcnow()
    stale = settings.reaper_stale_after_s
    cutoff = now - timedelta(seconds=stale)
    with factory() as s:
        rows = s.execute(
            select(Job.id, Job.attempt, Job.cancel_requested, Job.worker_id)
            .where(Job.state == RUNNING, Job.heartbeat_at < cutoff)
            .order_by(Job.heartbeat_at)
            .limit(500)
        ).all()
    requeued: list[str] = []
    for row in rows:
        cond = _fenced(row.id, row.attempt).where(Job.heartbeat_at < cutoff)
        lost = f"worker {row.worker_id} lost: no heartbeat for over {stale:g} s (attempt {row.attempt} of " \
               f"{settings.max_attempts})"
        if row.cancel_requested:
            values: dict[str, Any] = {"state": JobState.CANCELLED.value, "finished_at": now, "error": lost}
        elif row.attempt < settings.max_attempts:
            values = {"state": QUEUED, "worker_id": None, "heartbeat_at": None, "dispatched_at": now,
                      "progress": {"fraction": 0.0, "step": 0, "total_steps": None, "phase": "queued",
                                   "message": f"re-queued: {lost}"}}
        else:
            values = {"state": JobState.FAILED.value, "finished_at": now, "error": lost}
        with transaction(factory) as s:
            res = s.execute(cond.values(**values))
        if res.rowcount == 1:  # type: ignore[attr-defined]
            log.warning("reaper: job %s → %s (%s)", row.id, values["state"], lost)
            if values["state"] == QUEUED:
                requeued.append(row.id)
    return requeued
