"""Per-tenant limits and fair dispatch (``jobs.fairness``): a tenant's single job starts at the next
free slot, within one job duration, while another tenant has many jobs queued; in the embedded mode
(the local runner) and with a real Celery worker. Plus the cap on a tenant's active jobs (429).

"Within one job duration" is asserted by counting: between the moment B's job was queued and the
moment it started, at most one job of A may have started (the one that took the slot that was about
to free when B submitted). A FIFO would start every one of A's queued jobs first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import TINY_SPEC, auth, make_settings, new_key, wait_for
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from glorot_service.app import build_app
from jobs.db import transaction
from jobs.fairness import fair_queued
from jobs.models import Job, JobState, Tenant, utcnow

sys.path.insert(0, os.path.dirname(__file__))

A_QUEUED = 30


def _tenant(factory: sessionmaker[Session], name: str) -> int:
    with transaction(factory) as s:
        tenant = Tenant(name=name)
        s.add(tenant)
        s.flush()
        return tenant.id


def _job(factory: sessionmaker[Session], tenant_id: int, *, state: JobState = JobState.QUEUED,
         age_s: float = 0.0, started_age_s: float | None = None) -> str:
    now = utcnow()
    with transaction(factory) as s:
        started = None if started_age_s is None else now - timedelta(seconds=started_age_s)
        job = Job(tenant_id=tenant_id, spec=TINY_SPEC, state=state, created_at=now - timedelta(seconds=age_s),
                  started_at=started, heartbeat_at=started, attempt=0 if state == JobState.QUEUED else 1)
        s.add(job)
        s.flush()
        return job.id


def _starts_between(factory: sessionmaker[Session], tenant_id: int, after: Any, before: Any) -> int:
    with factory() as s:
        return int(s.execute(select(func.count()).select_from(Job).where(
            Job.tenant_id == tenant_id, Job.started_at > after, Job.started_at < before)).scalar_one())


def _cancel_queued(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as s:
        s.execute(update(Job).where(Job.state == JobState.QUEUED).values(state=JobState.CANCELLED))


# ------------------------------------------------------------------------------------- the fair order


def test_fewest_running_goes_first_then_tenants_alternate(factory: sessionmaker[Session]) -> None:
    a, b = _tenant(factory, "a"), _tenant(factory, "b")
    _job(factory, a, state=JobState.RUNNING, age_s=100, started_age_s=50)
    a_jobs = [_job(factory, a, age_s=90 - i) for i in range(5)]  # older than B's
    b_job = _job(factory, b, age_s=1)
    order = fair_queued(factory, limit=4)
    assert order == [b_job, *a_jobs[:3]], order  # B has nothing running; A's own jobs oldest first


def test_equal_running_the_least_recently_started_goes_first(factory: sessionmaker[Session]) -> None:
    a, b, c = _tenant(factory, "a"), _tenant(factory, "b"), _tenant(factory, "c")
    _job(factory, a, state=JobState.SUCCEEDED, age_s=100, started_age_s=5)  # A started a job 5 s ago
    _job(factory, b, state=JobState.SUCCEEDED, age_s=100, started_age_s=60)  # B a minute ago
    a_job, b_job = _job(factory, a, age_s=90), _job(factory, b, age_s=80)
    c_job = _job(factory, c, age_s=1)  # C never started anything
    assert fair_queued(factory, limit=3) == [c_job, b_job, a_job]


def test_one_tenant_alone_is_fifo(factory: sessionmaker[Session]) -> None:
    a = _tenant(factory, "a")
    jobs = [_job(factory, a, age_s=10 - i) for i in range(4)]
    assert fair_queued(factory, limit=10) == jobs
    assert fair_queued(factory, limit=0) == []


# --------------------------------------------------------------------------------------- the active cap


def test_active_job_cap_is_per_tenant_with_retry_after(db_url: str, tmp_path: Path,
                                                       factory: sessionmaker[Session]) -> None:
    settings = make_settings(db_url, tmp_path, tenant_max_active_jobs=3)
    busy, other = new_key(factory, settings, "busy"), new_key(factory, settings, "other")
    with TestClient(build_app(settings, start_runner=False)) as client:
        codes = [client.post("/v1/experiments", json=TINY_SPEC, headers={**auth(busy), "Idempotency-Key": f"k{i}"})
                 .status_code for i in range(4)]
        assert codes == [202, 202, 202, 429], codes
        r = client.post("/v1/experiments", json=TINY_SPEC, headers=auth(busy))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["type"].endswith("too-many-active-jobs") and r.json()["limit"] == 3
        # a repeated Idempotency-Key still returns its original job
        again = client.post("/v1/experiments", json=TINY_SPEC, headers={**auth(busy), "Idempotency-Key": "k0"})
        assert again.status_code == 202 and again.headers.get("idempotent-replayed") == "true"
        assert client.post("/v1/experiments", json=TINY_SPEC, headers=auth(other)).status_code == 202
        # a finished job frees a place
        job_id = client.get("/v1/jobs", headers=auth(busy)).json()["items"][0]["id"]
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(busy)).status_code in (200, 202)
        assert client.post("/v1/experiments", json=TINY_SPEC, headers=auth(busy)).status_code == 202


# ------------------------------------------------------------------------------------ embedded mode


def test_local_runner_starts_another_tenants_job_at_the_next_free_slot(
        db_url: str, tmp_path: Path, factory: sessionmaker[Session]) -> None:
    settings = make_settings(db_url, tmp_path, local_runner_concurrency=1)
    a_key, b_key = new_key(factory, settings, "flood"), new_key(factory, settings, "single")
    with TestClient(build_app(settings)) as client:
        a_ids = [client.post("/v1/experiments", json=TINY_SPEC, headers=auth(a_key)).json()["id"]
                 for _ in range(A_QUEUED)]
        wait_for(lambda: client.get(f"/v1/jobs/{a_ids[0]}", headers=auth(a_key)).json(),
                 lambda j: j["state"] != "QUEUED")
        b_id = client.post("/v1/experiments", json=TINY_SPEC, headers=auth(b_key)).json()["id"]
        b = wait_for(lambda: client.get(f"/v1/jobs/{b_id}", headers=auth(b_key)).json(),
                     lambda j: j["state"] in {"SUCCEEDED", "FAILED", "CANCELLED"})
        assert b["state"] == "SUCCEEDED", b["error"]
        _cancel_queued(factory)
    with factory() as s:
        b_row = s.execute(select(Job).where(Job.id == b_id)).scalar_one()
        a_tenant = s.execute(select(Job.tenant_id).where(Job.id == a_ids[0])).scalar_one()
    a_started = _starts_between(factory, a_tenant, b_row.created_at, b_row.started_at)
    assert a_started <= 1, f"{a_started} of A's jobs started before B's single job"


# -------------------------------------------------------------------------------------- Celery mode


@pytest.fixture
def celery_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh database, a private queue and one real ``glorot worker`` (concurrency 1)."""
    from celery_support import Env, Worker, fresh_database, services_or_fail

    from jobs.db import session_factory

    services_or_fail()
    with fresh_database("glorot_fair") as url:
        env = Env(database_url=url, tmp=tmp_path)
        with env.applied() as client:
            worker = Worker(env, "fair").start()
            try:
                yield {"client": client, "factory": session_factory(url), "worker": worker}
            finally:
                worker.stop()


@pytest.mark.integration
def test_celery_worker_runs_another_tenants_job_before_the_flood(celery_stack: dict[str, Any]) -> None:
    from celery_support import make_tenant, submit, wait_state

    factory, client, worker = celery_stack["factory"], celery_stack["client"], celery_stack["worker"]
    a, b = make_tenant(factory, "flood"), make_tenant(factory, "single")
    a_ids = [submit(factory, client, a, TINY_SPEC) for _ in range(A_QUEUED)]
    wait_state(factory, a_ids[0], {"RUNNING", "SUCCEEDED"}, 180, workers=(worker,))
    b_id = submit(factory, client, b, TINY_SPEC)
    b_row = wait_state(factory, b_id, {"SUCCEEDED", "FAILED", "CANCELLED"}, 180, workers=(worker,))
    assert b_row.state == "SUCCEEDED", (b_row.error, worker.tail())
    _cancel_queued(factory)
    a_started = _starts_between(factory, a, b_row.created_at, b_row.started_at)
    # one A job may take the slot as B is queued; the prefetched message of A's next job must not run first
    assert a_started <= 1, f"{a_started} of A's jobs started before B's single job\n{worker.tail()}"
