"""The job lifecycle's transition table, walked on both databases: every (state, transition) pair the
table allows works and ends in one of the table's target states; every other pair is refused and
leaves the row exactly as it was. Fenced transitions are also refused for an attempt that no longer
holds the job, and re-queues keep the progress's ``total_steps``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from test_execute import FAKE_REPORT, ROWS, make_job, row

from jobs import lifecycle
from jobs.db import transaction
from jobs.lifecycle import TRANSITIONS, Transition
from jobs.models import Job, JobState, Tenant, utcnow
from jobs.progress import JobProgress
from jobs.settings import Settings

FROM_STATES: list[JobState | None] = [None, *JobState]
TOTAL_STEPS = 1234
#: The columns a refused transition must leave untouched.
COLUMNS = ("state", "attempt", "progress", "error", "cancel_requested", "worker_id", "heartbeat_at",
           "dispatched_at", "finished_at")


def _place(factory: sessionmaker[Session], state: JobState, settings: Settings) -> str:
    """A job in ``state`` as a runner would have left it: attempt 1, a heartbeat old enough for the
    reaper, a dispatch old enough for the sweeper."""
    old = utcnow() - timedelta(seconds=max(settings.reaper_stale_after_s, settings.sweeper_queued_after_s) + 60)
    return make_job(factory, state=state, attempt=0 if state == JobState.QUEUED else 1, worker_id="w1",
                    heartbeat_at=old, dispatched_at=old, idempotency_key="k", request_hash="h" * 64,
                    progress=JobProgress(total_steps=TOTAL_STEPS, step=7, phase="train").as_json())


def _snapshot(factory: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    job = row(factory, job_id)
    return {c: getattr(job, c) for c in COLUMNS}


def _tenant(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return s.execute(select(Tenant.id).where(Tenant.name == "exec")).scalar_one()


def _submit(factory: sessionmaker[Session], tenant_id: int) -> lifecycle.Submission:
    with factory() as s:
        return lifecycle.submit(s, tenant_id=tenant_id, kind="experiment", spec={"a": 1}, resolved={"a": 1},
                                total_steps=TOTAL_STEPS, idempotency_key="k", body_hash="h" * 64)


def _apply(transition: Transition, factory: sessionmaker[Session], job_id: str, attempt: int,
           settings: Settings, seen: Any) -> bool:
    """Run ``transition`` on the job as its caller would; True when it says it did something."""
    match transition:
        case Transition.CLAIM:
            return lifecycle.claim(factory, job_id, "w2") is not None
        case Transition.HEARTBEAT:
            return lifecycle.heartbeat(factory, job_id, attempt)
        case Transition.PROGRESS:
            return lifecycle.report_progress(factory, job_id, attempt, JobProgress(step=9, total_steps=TOTAL_STEPS))
        case Transition.REQUEUE:
            return lifecycle.requeue(factory, job_id, attempt, "test")
        case Transition.FINISH:
            return lifecycle.finish(factory, job_id, attempt, FAKE_REPORT, ROWS)
        case Transition.FAIL:
            return lifecycle.fail(factory, job_id, attempt, "test failure")
        case Transition.STOP:
            return lifecycle.stop_cancelled(factory, job_id, attempt)
        case Transition.CANCEL:
            with factory() as s:
                try:
                    return lifecycle.request_cancel(s, job_id) is not None
                except lifecycle.TransitionRefused:
                    return False
        case Transition.REAP:
            return job_id in lifecycle.reap(factory, settings)
        case Transition.SWEEP:
            return lifecycle.sweep(factory, job_id, seen, utcnow())
    raise AssertionError(f"no driver for {transition}")


def test_the_table_names_every_transition_and_ends_nowhere_but_in_states() -> None:
    assert set(TRANSITIONS) == set(Transition)
    for transition, moves in TRANSITIONS.items():
        assert moves, transition
        for source, targets in moves.items():
            assert targets and all(isinstance(t, JobState) for t in targets), (transition, source)
            assert source is None or not source.terminal, f"{transition} starts from terminal {source}"


@pytest.mark.parametrize("transition", list(Transition), ids=str)
@pytest.mark.parametrize("source", FROM_STATES, ids=lambda s: "none" if s is None else s.value)
def test_transition_from_state(factory: sessionmaker[Session], settings: Settings, transition: Transition,
                               source: JobState | None) -> None:
    allowed = lifecycle.allowed(transition, source)
    if transition == Transition.SUBMIT:
        make_job(factory, state=JobState.SUCCEEDED)  # creates the tenant; holds no idempotency key
        tenant_id = _tenant(factory)
        original = _place(factory, source, settings) if source is not None else None
        before = _snapshot(factory, original) if original else None
        sub = _submit(factory, tenant_id)
        assert sub.created is allowed
        if allowed:
            assert row(factory, sub.job.id).state in TRANSITIONS[transition][None]
            assert JobProgress.of(row(factory, sub.job.id).progress).total_steps == TOTAL_STEPS
        else:  # an existing row is never changed by a submission: the same key returns it as it was
            assert original is not None and sub.job.id == original and _snapshot(factory, original) == before
        return
    if source is None:  # no such job: nothing to change, nothing created
        assert not _apply(transition, factory, "00000000-0000-0000-0000-000000000000", 1, settings, None)
        return
    job_id = _place(factory, source, settings)
    before = _snapshot(factory, job_id)
    did = _apply(transition, factory, job_id, before["attempt"], settings, before["dispatched_at"])
    after = _snapshot(factory, job_id)
    if not allowed:
        assert not did, f"{transition} from {source} was not refused"
        assert after == before, f"{transition} from {source} changed the row"
        return
    assert did, f"{transition} from {source} was refused"
    assert after["state"] in TRANSITIONS[transition][source], (transition, source, after["state"])
    # no writer loses total_steps (FINISH takes it from the report's resolved spec, the final word)
    want = FAKE_REPORT["spec"]["train"]["steps"] if transition == Transition.FINISH else TOTAL_STEPS
    assert JobProgress.of(after["progress"]).total_steps == want
    if transition in (Transition.HEARTBEAT, Transition.PROGRESS):
        assert after["heartbeat_at"] > before["heartbeat_at"]
    if transition == Transition.SWEEP:
        assert after["dispatched_at"] > before["dispatched_at"]
    if transition == Transition.CLAIM:
        assert after["attempt"] == before["attempt"] + 1


@pytest.mark.parametrize(("cancel", "attempt", "expected"), [
    (False, 1, JobState.QUEUED), (False, 2, JobState.FAILED), (True, 1, JobState.CANCELLED)],
    ids=["retry", "give-up", "cancel-pending"])
def test_every_reap_target_is_reached(factory: sessionmaker[Session], settings: Settings, cancel: bool,
                                      attempt: int, expected: JobState) -> None:
    assert settings.max_attempts == 2
    job_id = _place(factory, JobState.RUNNING, settings)
    with transaction(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(attempt=attempt, cancel_requested=cancel))
    assert lifecycle.reap(factory, settings) == {job_id: expected}
    job = row(factory, job_id)
    assert job.state == expected and JobProgress.of(job.progress).total_steps == TOTAL_STEPS


FENCED = [Transition.HEARTBEAT, Transition.PROGRESS, Transition.REQUEUE, Transition.FINISH, Transition.FAIL,
          Transition.STOP]


@pytest.mark.parametrize("transition", FENCED, ids=str)
def test_fenced_transitions_refuse_a_stale_attempt(factory: sessionmaker[Session], settings: Settings,
                                                   transition: Transition) -> None:
    """RUNNING, but held by attempt 2: attempt 1's writes touch nothing."""
    job_id = _place(factory, JobState.RUNNING, settings)
    with transaction(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(attempt=2))
    before = _snapshot(factory, job_id)
    assert not _apply(transition, factory, job_id, 1, settings, None)
    assert _snapshot(factory, job_id) == before


def test_the_reaper_leaves_a_fresh_heartbeat_alone(factory: sessionmaker[Session], settings: Settings) -> None:
    job_id = _place(factory, JobState.RUNNING, settings)
    assert lifecycle.heartbeat(factory, job_id, 1)
    assert lifecycle.reap(factory, settings) == {}
    assert row(factory, job_id).state == JobState.RUNNING


def test_state_reads_back_as_the_enum_and_the_database_refuses_others(factory: sessionmaker[Session],
                                                                      settings: Settings) -> None:
    job_id = _place(factory, JobState.QUEUED, settings)
    with factory() as s:
        state = s.execute(select(Job.state).where(Job.id == job_id)).scalar_one()
    assert state is JobState.QUEUED
    with pytest.raises(IntegrityError), transaction(factory) as s:  # the CHECK constraint, not just Python
        s.execute(text("UPDATE jobs SET state = 'PAUSED' WHERE id = :id"), {"id": job_id})
    assert row(factory, job_id).state == JobState.QUEUED
