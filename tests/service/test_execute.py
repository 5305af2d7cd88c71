"""The shared execution protocol (jobs.lifecycle + worker.execute) on both databases: conditional claim,
fencing by attempt, terminal states that never change, the heartbeat reaper, and failures stored with a
reason."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.db import transaction
from jobs.lifecycle import claim as claim_job
from jobs.lifecycle import fail as fail_job
from jobs.lifecycle import finish as store_results
from jobs.lifecycle import reap
from jobs.lifecycle import requeue as requeue_job
from jobs.models import Job, JobState, MetricPoint, Report, Tenant, utcnow
from jobs.settings import Settings
from worker import execute
from worker.execute import execute_job


def reap_stale_jobs(factory: sessionmaker[Session], settings: Settings) -> list[str]:
    """The ids the reaper re-queued (what the maintenance loop dispatches again)."""
    return [j for j, state in reap(factory, settings).items() if state == JobState.QUEUED]

FAKE_REPORT: dict[str, Any] = {"schema_version": 1, "spec": {"train": {"steps": 10}}, "snapshots": [{"step": 10}]}
ROWS = [(0, 1, "activation.std", 0.5), (10, 1, "activation.std", 0.4), (0, 0, "test_error", 0.9)]


def make_job(factory: sessionmaker[Session], spec: dict[str, Any] | None = None, **values: Any) -> str:
    from glorot_core.spec import validate_spec

    spec = spec or {"model": {"hidden": [8]}, "train": {"steps": 0},
                    "diagnostics": {"monitor_examples": 20, "jacobian": {"mode": "off"}}, "data": {"test_examples": 50}}
    with transaction(factory) as s:
        tenant = s.execute(select(Tenant).where(Tenant.name == "exec")).scalar_one_or_none()
        if tenant is None:
            tenant = Tenant(name="exec")
            s.add(tenant)
            s.flush()
        job = Job(tenant_id=tenant.id, spec=spec, resolved_spec=validate_spec(spec).model_dump(mode="json"),
                  **{"progress": {}, "cancel_requested": False, **values})
        s.add(job)
        s.flush()
        return job.id


def row(factory: sessionmaker[Session], job_id: str) -> Job:
    with factory() as s:
        return s.execute(select(Job).where(Job.id == job_id)).scalar_one()


def test_claim_is_conditional(factory: sessionmaker[Session]) -> None:
    job_id = make_job(factory)
    assert claim_job(factory, job_id, "w1") == 1
    assert claim_job(factory, job_id, "w2") is None
    job = row(factory, job_id)
    assert (job.state, job.attempt, job.worker_id) == ("RUNNING", 1, "w1") and job.heartbeat_at


def test_double_delivery_runs_once(factory: sessionmaker[Session], settings: Settings,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers get the same job at the same moment (a redelivered message): one runs it."""
    import glorot_core.runner

    runs: list[str] = []
    real = glorot_core.runner.run_experiment

    def counting(spec: Any, **kw: Any) -> dict[str, Any]:
        runs.append(threading.current_thread().name)
        return real(spec, **kw)

    monkeypatch.setattr(glorot_core.runner, "run_experiment", counting)
    job_id = make_job(factory)
    results: list[execute.ExecutionResult] = []
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        barrier.wait()
        results.append(execute_job(job_id, settings=settings, factory=factory, worker_id=name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",), name=f"w{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(runs) == 1
    assert sorted(r.claimed for r in results) == [False, True]
    job = row(factory, job_id)
    assert job.state == "SUCCEEDED" and job.attempt == 1
    with factory() as s:
        assert s.execute(select(func.count()).select_from(Report)).scalar() == 1


def test_results_are_fenced_by_attempt(factory: sessionmaker[Session], settings: Settings) -> None:
    """Attempt 1 is presumed dead and re-queued; attempt 2 claims; attempt 1's late results are dropped."""
    job_id = make_job(factory)
    assert claim_job(factory, job_id, "old") == 1
    with transaction(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
    assert reap_stale_jobs(factory, settings) == [job_id]
    assert row(factory, job_id).state == "QUEUED"
    assert claim_job(factory, job_id, "new") == 2
    assert store_results(factory, job_id, 1, FAKE_REPORT, ROWS) is False  # the old attempt: fenced out
    assert fail_job(factory, job_id, 1, "late failure") is False
    assert row(factory, job_id).state == "RUNNING"
    assert store_results(factory, job_id, 2, FAKE_REPORT, ROWS) is True
    job = row(factory, job_id)
    assert (job.state, job.attempt, job.error) == ("SUCCEEDED", 2, None)
    with factory() as s:
        assert s.execute(select(Report.attempt).where(Report.job_id == job_id)).scalar_one() == 2
        assert s.execute(select(func.count()).select_from(MetricPoint)).scalar() == 3


def test_terminal_states_never_change(factory: sessionmaker[Session], settings: Settings) -> None:
    job_id = make_job(factory)
    attempt = claim_job(factory, job_id, "w")
    assert attempt == 1 and fail_job(factory, job_id, attempt, "boom")
    assert store_results(factory, job_id, attempt, FAKE_REPORT, ROWS) is False
    assert requeue_job(factory, job_id, attempt, "x") is False
    assert claim_job(factory, job_id, "w2") is None
    with transaction(factory) as s:  # even a stale heartbeat on a terminal row is left alone
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert reap_stale_jobs(factory, settings) == []
    job = row(factory, job_id)
    assert (job.state, job.error) == ("FAILED", "boom")


def test_reaper(factory: sessionmaker[Session], settings: Settings) -> None:
    old = utcnow() - timedelta(seconds=settings.reaper_stale_after_s + 5)
    retry = make_job(factory, state="RUNNING", attempt=1, heartbeat_at=old, worker_id="dead")
    give_up = make_job(factory, state="RUNNING", attempt=settings.max_attempts, heartbeat_at=old, worker_id="dead")
    cancelled = make_job(factory, state="RUNNING", attempt=1, heartbeat_at=old, cancel_requested=True)
    alive = make_job(factory, state="RUNNING", attempt=1, heartbeat_at=utcnow(), worker_id="alive")
    assert reap_stale_jobs(factory, settings) == [retry]
    r = row(factory, retry)
    assert (r.state, r.worker_id) == ("QUEUED", None) and "re-queued" in r.progress["message"]
    g = row(factory, give_up)
    assert g.state == "FAILED" and "no heartbeat" in g.error and g.finished_at is not None
    assert row(factory, cancelled).state == "CANCELLED"
    assert row(factory, alive).state == "RUNNING"
    # the re-queued job runs again as attempt 2
    assert claim_job(factory, retry, "w") == 2


def test_execute_stores_failures_and_cancels(factory: sessionmaker[Session], settings: Settings,
                                             tmp_path: Any) -> None:
    bad = make_job(factory, {"model": {"hidden": [8], "input_dim": 784, "num_classes": 10},
                             "data": {"dataset": "mnist", "root": str(tmp_path)}})
    res = execute_job(bad, settings=settings, factory=factory)
    assert res.claimed and res.state == "FAILED"
    job = row(factory, bad)
    assert job.state == "FAILED" and job.error.startswith("DataUnavailable")
    long = make_job(factory, {"model": {"hidden": [8]}, "train": {"steps": 10_000_000},
                              "diagnostics": {"every": 10_000_000, "monitor_examples": 20, "jacobian": {"mode": "off"}},
                              "data": {"test_examples": 50}})
    with transaction(factory) as s:  # cancel requested before the run even starts
        s.execute(update(Job).where(Job.id == long).values(cancel_requested=True))
    res = execute_job(long, settings=settings, factory=factory)
    assert res.state == "CANCELLED" and row(factory, long).state == JobState.CANCELLED.value


def test_soft_time_limit_fails_with_reason(factory: sessionmaker[Session], db_url: str, tmp_path: Any) -> None:
    from service_support import make_settings

    settings = make_settings(db_url, tmp_path, job_soft_time_limit_s=1.0, job_hard_time_limit_s=5.0)
    job_id = make_job(factory, {"model": {"hidden": [8]}, "train": {"steps": 10_000_000},
                                "diagnostics": {"every": 10_000_000, "monitor_examples": 20,
                                                "jacobian": {"mode": "off"}}, "data": {"test_examples": 50}})
    res = execute_job(job_id, settings=settings, factory=factory)
    assert res.state == "FAILED" and "soft time limit" in row(factory, job_id).error


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(factory: sessionmaker[Session]) -> None:
    """Racing requests with the same key: the unique (tenant, key) constraint lets one insert win and
    the others return that job."""
    from api.services import submit_job

    make_job(factory)  # creates the tenant
    with factory() as s:
        tenant_id = s.execute(select(Tenant.id).where(Tenant.name == "exec")).scalar_one()
    barrier = threading.Barrier(4)
    ids: list[str] = []

    def go() -> None:
        barrier.wait()
        with factory() as s:
            sub = submit_job(s, tenant_id=tenant_id, kind="experiment", spec={"a": 1}, resolved={"a": 1},
                             total_steps=0, idempotency_key="race", body_hash="h" * 64)
            ids.append(sub.job.id)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 4 and len(set(ids)) == 1
    with factory() as s:
        assert s.execute(select(func.count()).select_from(Job).where(Job.idempotency_key == "race")).scalar() == 1
