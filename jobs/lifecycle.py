"""Every state change of a job, in one place, checked against one table (docs/architecture.md).

``TRANSITIONS`` says, for each transition, from which states it may start and in which it may end.
Each function below is a conditional ``UPDATE … WHERE state IN (sources)`` built from that table, so
a transition the table does not allow touches no row and reports that it did nothing (``False`` /
``None``), whatever races happen between processes. ``tests/service/test_transitions.py`` walks the
table on both databases.

The job row is the truth and the attempt number is the fencing token:

* **Claim** (QUEUED → RUNNING) bumps ``attempt``. Exactly one claimant sees one row updated; a
  message delivered twice, or a local runner racing a Celery worker, finds nothing to claim. A re-run
  (attempt > 1) clears the series the dead attempt streamed, in the claim's own transaction.
* **Fencing**: every later write by the claimant (heartbeat, progress, streamed metric points, the
  final state, the report and its series) is ``… WHERE id=:id AND attempt=:mine AND state='RUNNING'``.
  If the reaper re-queued the job (the attempt moved on) or it went terminal, the write touches no row
  and the run stops writing. Results and SUCCEEDED commit in one transaction, so a report exists iff
  the job SUCCEEDED, written by the attempt the row says ran it.
* **Terminal states never change**: no transition starts from SUCCEEDED, FAILED or CANCELLED.
* **Reap**: RUNNING rows whose heartbeat is older than ``reaper_stale_after_s`` lost their worker:
  re-queued while ``attempt < max_attempts``, else FAILED with the reason (CANCELLED if a cancel was
  pending). Each settlement is conditional on the attempt and the stale heartbeat, so many reapers act once.
* **Sweep**: a QUEUED row whose message may be lost gets its ``dispatched_at`` advanced by a
  compare-and-set on the value read, committed before the new message is published; many sweepers
  together send one message per job per period.
* **Database outages**: the claimant's writes (claim, finish, fail, stop, requeue) take ``retry_s``:
  on a transient error (``jobs.transient``) the same conditional UPDATE is tried again with backoff for
  that long. A retry is idempotent, and when an earlier try's COMMIT may have landed before the
  connection broke (the retry then touches nothing), the row is read: if it already shows this
  attempt's outcome, the write counts as done.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from glorot_core.json_numbers import json_safe
from jobs import reports
from jobs.db import transaction
from jobs.metrics import MetricRow, delete_metric_series, write_metric_rows
from jobs.models import Job, JobState, utcnow
from jobs.progress import JobProgress
from jobs.settings import Settings
from jobs.transient import retry_transient

log = logging.getLogger("glorot.lifecycle")

#: Longest error text stored on a job.
MAX_ERROR_CHARS = 4000
#: Most rows one reaper or sweeper round settles (the rest wait for the next round).
ROUND_LIMIT = 500

QUEUED, RUNNING = JobState.QUEUED, JobState.RUNNING
SUCCEEDED, FAILED, CANCELLED = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


class Transition(enum.StrEnum):
    """The names of the state changes of a job."""

    SUBMIT = "submit"  # the API stores a new job
    CLAIM = "claim"  # a runner takes it (attempt + 1)
    HEARTBEAT = "heartbeat"  # the claimant is alive (fenced)
    PROGRESS = "progress"  # the claimant reports progress (fenced)
    REQUEUE = "requeue"  # the claimant's process was stopped on purpose (fenced)
    FINISH = "finish"  # results and SUCCEEDED, in one transaction (fenced)
    FAIL = "fail"  # the run failed, with a reason (fenced)
    CANCEL = "cancel"  # a tenant asks: QUEUED ends at once, RUNNING gets the flag
    STOP = "stop"  # the run stopped at a cancel request (fenced)
    REAP = "reap"  # the heartbeat went stale: the worker is gone
    SWEEP = "sweep"  # QUEUED too long since its last dispatch: dispatch again


#: transition → {from-state: the states it may end in}. ``None`` is "no row yet" (submit).
TRANSITIONS: Mapping[Transition, Mapping[JobState | None, frozenset[JobState]]] = {
    Transition.SUBMIT: {None: frozenset({QUEUED})},
    Transition.CLAIM: {QUEUED: frozenset({RUNNING})},
    Transition.HEARTBEAT: {RUNNING: frozenset({RUNNING})},
    Transition.PROGRESS: {RUNNING: frozenset({RUNNING})},
    Transition.REQUEUE: {RUNNING: frozenset({QUEUED})},
    Transition.FINISH: {RUNNING: frozenset({SUCCEEDED})},
    Transition.FAIL: {RUNNING: frozenset({FAILED})},
    Transition.CANCEL: {QUEUED: frozenset({CANCELLED}), RUNNING: frozenset({RUNNING})},
    Transition.STOP: {RUNNING: frozenset({CANCELLED})},
    Transition.REAP: {RUNNING: frozenset({QUEUED, FAILED, CANCELLED})},
    Transition.SWEEP: {QUEUED: frozenset({QUEUED})},
}


def sources(transition: Transition) -> frozenset[JobState]:
    """The states ``transition`` may start from."""
    return frozenset(s for s in TRANSITIONS[transition] if s is not None)


def allowed(transition: Transition, state: JobState | None) -> bool:
    """Whether the table lets ``transition`` start from ``state``."""
    return state in TRANSITIONS[transition]


class TransitionRefused(Exception):
    """The job is in a state the transition cannot start from (``state``)."""

    def __init__(self, transition: Transition, state: JobState) -> None:
        super().__init__(f"{transition.value} is not allowed from {state.value}")
        self.transition, self.state = transition, state


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was used before with another request body (``job_id``: the original)."""

    def __init__(self, job_id: str) -> None:
        super().__init__("this Idempotency-Key was already used with a different request body")
        self.job_id = job_id


class IdempotencyConflict(Exception):
    """Concurrent submissions with one Idempotency-Key kept colliding; the client should retry."""


class StateMoved(Exception):
    """The job kept changing state under a transition that retried; the client should retry."""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _from(transition: Transition, job_id: str) -> Update:
    """``UPDATE jobs WHERE id = :job_id AND state IN (the transition's sources)``."""
    return (
        update(Job)
        .where(Job.id == job_id, Job.state.in_(sources(transition)))
        .execution_options(synchronize_session=False)
    )


def _fenced(transition: Transition, job_id: str, attempt: int) -> Update:
    """An UPDATE that only touches the row while ``attempt`` still holds it (and the table allows it)."""
    return _from(transition, job_id).where(Job.attempt == attempt)


def _touched(result: Any) -> bool:
    return bool(result.rowcount == 1)


def _progress(s: Session, job_id: str) -> JobProgress:
    return JobProgress.of(s.execute(select(Job.progress).where(Job.id == job_id)).scalar_one_or_none())


# ------------------------------------------------------------------------------------------- submit


@dataclass(frozen=True)
class Submission:
    """A submitted job; ``created`` False: the original of a repeated Idempotency-Key."""

    job: Job
    created: bool


def submit(
    session: Session, *, tenant_id: int, kind: str, spec: dict[str, Any], resolved: dict[str, Any],
    total_steps: int | None, idempotency_key: str | None, body_hash: str,
) -> Submission:
    """(none) → QUEUED, committed; or, for a repeated Idempotency-Key, the original job.

    Same key + same body (canonical JSON hash) → the original; same key + another body →
    :class:`IdempotencyKeyReused`. A concurrent duplicate loses the unique (tenant_id, idempotency_key)
    race and re-reads.
    """
    for _ in range(3):
        if idempotency_key is not None:
            existing = session.execute(
                select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
            ).scalar_one_or_none()
            if existing is not None:
                session.commit()  # ends the read; unlike rollback, keeps ``existing`` loaded
                if existing.request_hash != body_hash:
                    raise IdempotencyKeyReused(existing.id)
                return Submission(existing, created=False)
        now = utcnow()
        job = Job(
            tenant_id=tenant_id, kind=kind, state=QUEUED, attempt=0, spec=spec, resolved_spec=resolved,
            idempotency_key=idempotency_key, request_hash=body_hash,
            progress=JobProgress(total_steps=total_steps).as_json(),
            cancel_requested=False, created_at=now, dispatched_at=now,
        )
        session.add(job)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if idempotency_key is None:
                raise
            continue
        return Submission(job, created=True)
    raise IdempotencyConflict("concurrent requests with this Idempotency-Key; retry")


# -------------------------------------------------------------------------------------------- claim


class _Retried:
    """Runs one write with :func:`retry_transient` and remembers whether a try failed, after which a
    write that touches nothing may mean an earlier try's COMMIT landed before its connection broke."""

    def __init__(self) -> None:
        self.failed = False

    def run(self, op: Any, *, retry_s: float, what: str) -> Any:
        def once() -> Any:
            try:
                return op()
            except Exception:
                self.failed = True
                raise
        return retry_transient(once, timeout_s=retry_s, what=what)


def claim(factory: sessionmaker[Session], job_id: str, worker_id: str, *, retry_s: float = 0.0) -> int | None:
    """QUEUED → RUNNING with attempt + 1; returns the new attempt, or None when not claimable.

    ``retry_s``: retry transient database errors that long. If a failed try had in fact committed, the
    retry finds the row RUNNING under ``worker_id`` and returns that attempt (``worker_id`` names one
    delivery, so no one else claims under it)."""
    tries = _Retried()
    got = tries.run(lambda: _claim(factory, job_id, worker_id), retry_s=retry_s, what=f"claim of job {job_id}")
    if got is None and tries.failed:
        now = holder(factory, job_id)
        if now.state == RUNNING and now.worker_id == worker_id:
            return now.attempt
    return got  # type: ignore[no-any-return]


def _claim(factory: sessionmaker[Session], job_id: str, worker_id: str) -> int | None:
    now = utcnow()
    with transaction(factory) as s:
        progress = _progress(s, job_id).but(fraction=0.0, step=0, phase="setup", message="claimed")
        res = s.execute(_from(Transition.CLAIM, job_id).values(
            state=RUNNING, attempt=Job.attempt + 1, worker_id=worker_id, started_at=now, heartbeat_at=now,
            progress=progress.as_json()))
        if not _touched(res):
            return None
        # We hold the row (Postgres row lock / SQLite write lock) until commit: this is our attempt.
        attempt = int(s.execute(select(Job.attempt).where(Job.id == job_id)).scalar_one())
        if attempt > 1:  # a re-run: the series streamed by the dead attempt go, with the claim
            delete_metric_series(s, job_id)
        return attempt


def next_queued(factory: sessionmaker[Session], limit: int = 10) -> list[str]:
    """Oldest QUEUED job ids (the local runner's poll)."""
    with factory() as s:
        return list(
            s.execute(select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at, Job.id).limit(limit)).scalars()
        )


# ------------------------------------------------------------------------------- while it runs (fenced)


def beat(s: Session, job_id: str, attempt: int, progress: JobProgress | None = None) -> bool:
    """The heartbeat (and, given, the progress) of ``attempt``, inside the caller's transaction ``s``.
    False when the attempt no longer holds the job (nothing written). The UPDATE also locks the row, so
    what the caller writes after it in ``s`` (streamed metric points) is fenced too."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    transition = Transition.HEARTBEAT
    if progress is not None:
        values["progress"] = progress.as_json()
        transition = Transition.PROGRESS
    return _touched(s.execute(_fenced(transition, job_id, attempt).values(**values)))


def heartbeat(factory: sessionmaker[Session], job_id: str, attempt: int) -> bool:
    """RUNNING → RUNNING: ``heartbeat_at`` = now, if ``attempt`` holds the job."""
    with transaction(factory) as s:
        return beat(s, job_id, attempt)


def report_progress(factory: sessionmaker[Session], job_id: str, attempt: int, progress: JobProgress) -> bool:
    """RUNNING → RUNNING: the progress and the heartbeat, if ``attempt`` holds the job."""
    with transaction(factory) as s:
        return beat(s, job_id, attempt, progress)


@dataclass(frozen=True)
class Holder:
    """Who holds a job now, as the row says (``None`` fields: no such job)."""

    state: JobState | None
    attempt: int | None
    cancel_requested: bool = False
    worker_id: str | None = None

    def held_by(self, attempt: int) -> bool:
        return self.state == RUNNING and self.attempt == attempt


def holder(factory: sessionmaker[Session], job_id: str) -> Holder:
    """The row's state, attempt, cancel flag and worker (one indexed read)."""
    with factory() as s:
        row = s.execute(
            select(Job.state, Job.attempt, Job.cancel_requested, Job.worker_id).where(Job.id == job_id)
        ).one_or_none()
    if row is None:
        return Holder(None, None)
    return Holder(row.state, row.attempt, bool(row.cancel_requested), row.worker_id)


# ------------------------------------------------------------------------------------- ending a run


def _settled(factory: sessionmaker[Session], job_id: str, attempt: int, target: JobState, tries: _Retried,
             done: bool) -> bool:
    """``done``, or, after a failed try, whether the row already shows ``attempt`` ended in ``target``."""
    if done or not tries.failed:
        return done
    now = holder(factory, job_id)
    return now.state == target and now.attempt == attempt


def _end(factory: sessionmaker[Session], transition: Transition, job_id: str, attempt: int, *, error: str | None,
         message: str, retry_s: float = 0.0) -> bool:
    (target,) = TRANSITIONS[transition][RUNNING]
    tries = _Retried()
    done = tries.run(lambda: _end_once(factory, transition, job_id, attempt, target, error=error, message=message),
                     retry_s=retry_s, what=f"{transition.value} of job {job_id}")
    return _settled(factory, job_id, attempt, target, tries, done)


def _end_once(factory: sessionmaker[Session], transition: Transition, job_id: str, attempt: int, target: JobState,
              *, error: str | None, message: str) -> bool:
    now = utcnow()
    with transaction(factory) as s:
        progress = _progress(s, job_id).but(phase="done", message=message)
        res = s.execute(_fenced(transition, job_id, attempt).values(
            state=target, error=_clip(error) if error else None, finished_at=now, heartbeat_at=now,
            progress=progress.as_json()))
        return _touched(res)


def fail(factory: sessionmaker[Session], job_id: str, attempt: int, error: str, *, retry_s: float = 0.0) -> bool:
    """RUNNING → FAILED with ``error``, if ``attempt`` still holds the job."""
    return _end(factory, Transition.FAIL, job_id, attempt, error=error, message="failed", retry_s=retry_s)


def stop_cancelled(factory: sessionmaker[Session], job_id: str, attempt: int, error: str | None = None, *,
                   retry_s: float = 0.0) -> bool:
    """RUNNING → CANCELLED (the run stopped at a cancel request), if ``attempt`` still holds the job."""
    return _end(factory, Transition.STOP, job_id, attempt, error=error, message="cancelled", retry_s=retry_s)


def fail_running(factory: sessionmaker[Session], job_id: str, error: str, *, worker_id: str | None = None) -> bool:
    """FAILED for whatever attempt is RUNNING now (only if ``worker_id`` holds it, when given).

    For a supervisor that saw its job process die (Celery's hard time limit) and does not know the
    attempt the process claimed."""
    now = holder(factory, job_id)
    if now.state != RUNNING or now.attempt is None or (worker_id is not None and now.worker_id != worker_id):
        return False
    return fail(factory, job_id, now.attempt, error)


def requeue(factory: sessionmaker[Session], job_id: str, attempt: int, reason: str, *, retry_s: float = 0.0) -> bool:
    """RUNNING → QUEUED for ``attempt`` (its process was stopped on purpose); the next claim is a new
    attempt. ``total_steps`` stays in the progress."""
    tries = _Retried()
    done = tries.run(lambda: _requeue(factory, job_id, attempt, reason), retry_s=retry_s,
                     what=f"requeue of job {job_id}")
    return _settled(factory, job_id, attempt, QUEUED, tries, done)


def _requeue(factory: sessionmaker[Session], job_id: str, attempt: int, reason: str) -> bool:
    with transaction(factory) as s:
        progress = _progress(s, job_id).but(fraction=0.0, step=0, phase="queued", message=f"re-queued: {reason}")
        res = s.execute(_fenced(Transition.REQUEUE, job_id, attempt).values(
            state=QUEUED, worker_id=None, heartbeat_at=None, dispatched_at=utcnow(), progress=progress.as_json()))
        return _touched(res)


def finish(
    factory: sessionmaker[Session], job_id: str, attempt: int, report: dict[str, Any], rows: Iterable[MetricRow],
    *, retry_s: float = 0.0,
) -> bool:
    """RUNNING → SUCCEEDED + the report + the metric series, in one transaction, only if ``attempt`` is
    current. The series streamed during the run are replaced by ``rows`` (the report's), so the job
    ends with exactly the report's series whatever was streamed before. ``retry_s``: retry transient
    database errors that long (the whole transaction again)."""
    body = json_safe(report)  # run_experiment's reports already are; reports from elsewhere may not be
    layout, parts = reports.split(body)  # serialised once, stored in parts (jobs/reports.py)
    steps = max((snap.get("step", 0) for snap in body.get("snapshots", [])), default=0)
    total = body.get("spec", {}).get("train", {}).get("steps")
    series = list(rows)
    tries = _Retried()
    done = tries.run(lambda: _finish(factory, job_id, attempt, (layout, parts), steps, total, series),
                     retry_s=retry_s,
                     what=f"finish of job {job_id}")
    return _settled(factory, job_id, attempt, SUCCEEDED, tries, done)


def _finish(factory: sessionmaker[Session], job_id: str, attempt: int,
            stored: tuple[reports.Layout, list[reports.Part]], steps: int, total: int | None,
            rows: list[MetricRow]) -> bool:
    now = utcnow()
    with transaction(factory) as s:
        progress = _progress(s, job_id).but(fraction=1.0, step=steps, phase="done", message="succeeded")
        if total is not None:
            progress = progress.but(total_steps=total)
        res = s.execute(_fenced(Transition.FINISH, job_id, attempt).values(
            state=SUCCEEDED, finished_at=now, heartbeat_at=now, error=None, progress=progress.as_json()))
        if not _touched(res):
            return False  # fenced out; nothing was written
        reports.store(s, job_id, attempt, *stored, created_at=now)
        delete_metric_series(s, job_id)  # what this attempt streamed: replaced by the report's rows
        write_metric_rows(s, job_id, rows)
    return True


# ------------------------------------------------------------------------------------------ cancel


def request_cancel(session: Session, job_id: str, *, tenant_id: int | None = None) -> JobState | None:
    """QUEUED → CANCELLED at once; RUNNING → ``cancel_requested`` (the run stops at its next check).

    Returns the state the job is in afterwards; None when no such job (of ``tenant_id``, when given).
    Raises :class:`TransitionRefused` for a terminal job, :class:`StateMoved` if the state kept moving
    under the conditional UPDATE."""
    q = select(Job.state, Job.progress).where(Job.id == job_id)
    if tenant_id is not None:
        q = q.where(Job.tenant_id == tenant_id)
    for _ in range(3):
        row = session.execute(q).one_or_none()
        if row is None:
            session.rollback()
            return None
        if not allowed(Transition.CANCEL, row.state):
            session.rollback()
            raise TransitionRefused(Transition.CANCEL, row.state)
        now = utcnow()
        values: dict[str, Any] = {"cancel_requested": True, "cancel_requested_at": now}
        if row.state == QUEUED:
            values.update(state=CANCELLED, finished_at=now,
                          progress=JobProgress.of(row.progress).but(phase="done", message="cancelled").as_json())
        res = session.execute(
            update(Job).where(Job.id == job_id, Job.state == row.state).values(**values)
            .execution_options(synchronize_session=False))
        session.commit()
        if _touched(res):
            (target,) = TRANSITIONS[Transition.CANCEL][row.state]
            return target
    session.rollback()
    raise StateMoved(job_id)


# --------------------------------------------------------------------------------- reaper and sweeper


def _reap_values(settings: Settings, row: Any, now: datetime) -> dict[str, Any]:
    stale = settings.reaper_stale_after_s
    lost = (f"worker {row.worker_id} lost: no heartbeat for over {stale:g} s "
            f"(attempt {row.attempt} of {settings.max_attempts})")
    if row.cancel_requested:
        return {"state": CANCELLED, "finished_at": now, "error": lost,
                "progress": JobProgress.of(row.progress).but(phase="done", message="cancelled").as_json()}
    if row.attempt < settings.max_attempts:
        return {"state": QUEUED, "worker_id": None, "heartbeat_at": None, "dispatched_at": now,
                "progress": JobProgress.of(row.progress).but(
                    fraction=0.0, step=0, phase="queued", message=f"re-queued: {lost}").as_json()}
    return {"state": FAILED, "finished_at": now, "error": lost,
            "progress": JobProgress.of(row.progress).but(phase="done", message="failed").as_json()}


def reap(factory: sessionmaker[Session], settings: Settings, *, now: datetime | None = None) -> dict[str, JobState]:
    """Settle RUNNING jobs whose heartbeat is older than ``reaper_stale_after_s``: attempt <
    max_attempts → QUEUED (the next claim is attempt + 1; the dead attempt is fenced out); otherwise
    FAILED with the reason; a job whose cancel was pending → CANCELLED. Returns {job id: new state}
    for the rows this call settled."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.reaper_stale_after_s)
    with factory() as s:
        rows = s.execute(
            select(Job.id, Job.attempt, Job.cancel_requested, Job.worker_id, Job.progress)
            .where(Job.state.in_(sources(Transition.REAP)), Job.heartbeat_at < cutoff)
            .order_by(Job.heartbeat_at)
            .limit(ROUND_LIMIT)
        ).all()
    settled: dict[str, JobState] = {}
    for row in rows:
        values = _reap_values(settings, row, now)
        with transaction(factory) as s:
            res = s.execute(_fenced(Transition.REAP, row.id, row.attempt).where(Job.heartbeat_at < cutoff)
                            .values(**values))
        if _touched(res):
            settled[row.id] = values["state"]
            log.warning("reaper: job %s → %s (worker %s lost)", row.id, values["state"].value, row.worker_id)
    return settled


def sweep_candidates(factory: sessionmaker[Session], settings: Settings, now: datetime, *,
                     older_than_s: float | None = None) -> list[tuple[str, Any]]:
    """(id, dispatched_at) of jobs QUEUED for longer than ``sweeper_queued_after_s`` (or ``older_than_s``:
    the sweep right after the broker came back) since their last dispatch (or their creation, if never
    dispatched), oldest first."""
    age = settings.sweeper_queued_after_s if older_than_s is None else older_than_s
    cutoff = now - timedelta(seconds=age)
    with factory() as s:
        rows = s.execute(
            select(Job.id, Job.dispatched_at)
            .where(
                Job.state.in_(sources(Transition.SWEEP)),
                or_(Job.dispatched_at < cutoff, and_(Job.dispatched_at.is_(None), Job.created_at < cutoff)),
            )
            .order_by(Job.created_at)
            .limit(ROUND_LIMIT)
        ).all()
    return [(r.id, r.dispatched_at) for r in rows]


def sweep(factory: sessionmaker[Session], job_id: str, seen: datetime | None, now: datetime) -> bool:
    """QUEUED → QUEUED with ``dispatched_at`` = ``now``, by compare-and-set on the value read
    (``seen``): True for the one caller that should publish the job's message again."""
    cond = Job.dispatched_at.is_(None) if seen is None else Job.dispatched_at == seen
    with transaction(factory) as s:
        return _touched(s.execute(_from(Transition.SWEEP, job_id).where(cond).values(dispatched_at=now)))
