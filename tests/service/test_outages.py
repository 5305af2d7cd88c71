"""Database and broker outages, on the real PostgreSQL and Redis, cut through a TCP proxy
(``tcp_proxy.TcpProxy``) so that the shared servers are never restarted:

* while the database cannot be reached, reads and submissions answer 503 problem+json with
  ``Retry-After``, and 200/202 again once it is back, with no restart of the API;
* a job whose training ends during a database outage is SUCCEEDED on attempt 1 (the finish is retried,
  the reaper does not take the silent worker for dead), and messages delivered to an idle worker
  during the outage go back to the queue instead of being acknowledged;
* after a broker outage that lost the queue, QUEUED jobs are dispatched again within seconds, long
  before the periodic sweeper would.

Run alone: ``.venv/bin/pytest -q tests/service/test_outages.py``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

sys.path.insert(0, os.path.dirname(__file__))
from celery_support import (
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    TERMINAL,
    TINY_SPEC,
    Env,
    Worker,
    fresh_database,
    job_row,
    long_spec,
    make_tenant,
    request_cancel,
    services_or_fail,
    submit,
    wait_state,
)
from service_support import auth, make_settings, new_key
from tcp_proxy import TcpProxy

from jobs.transient import ReapGate, is_transient, retry_transient

#: A job that trains for seconds: long enough to cut the database under it, short enough to finish.
MEDIUM_STEPS = 2000


def _proxied(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def _until(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(poll)


# ------------------------------------------------------------------------------------ no services


def _operational(msg: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception(msg))


def test_transient_errors_are_told_from_permanent_ones() -> None:
    assert is_transient(_operational("server closed the connection unexpectedly"))
    assert not is_transient(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_transient(ValueError("not a database error"))


def test_retry_transient_retries_within_its_window_and_no_longer() -> None:
    calls: list[float] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(0)
        if len(calls) < 4:
            raise _operational("the database system is shutting down")
        return "done"

    assert retry_transient(flaky, timeout_s=60, what="test", sleep=slept.append) == "done"
    assert len(calls) == 4 and slept == sorted(slept)  # backoff grows
    with pytest.raises(IntegrityError):  # a permanent error is raised at once, not retried
        retry_transient(lambda: (_ for _ in ()).throw(IntegrityError("x", {}, Exception())), timeout_s=60,
                        what="test", sleep=slept.append)
    with pytest.raises(OperationalError):  # timeout 0: one try
        retry_transient(lambda: (_ for _ in ()).throw(_operational("down")), timeout_s=0, what="test")


def test_reap_gate_waits_the_stale_window_after_the_database_returns() -> None:
    now = [100.0]
    gate = ReapGate(stale_after_s=60, clock=lambda: now[0])
    assert gate.open()  # started with the database answering: heartbeats are the truth
    gate.failed()
    now[0] += 300  # a 5-minute outage: every heartbeat is now 5 minutes old
    assert not gate.open()
    gate.answered()
    now[0] += 59.9  # live workers have beaten again by now, but wait the whole window
    assert not gate.open()
    gate.answered()  # answering again does not restart the window
    now[0] += 0.2
    assert gate.open()


# ------------------------------------------------------------------------------ the API, PostgreSQL


@pytest.fixture()
def pg_url() -> Iterator[str]:
    services_or_fail()
    with fresh_database("glorot_outage") as url:
        yield url


def test_api_answers_503_while_the_database_is_cut_and_recovers_by_itself(pg_url: str, tmp_path: Path) -> None:
    from jobs.db import session_factory

    direct = session_factory(pg_url)
    with TcpProxy("127.0.0.1", make_url(pg_url).port or 5432) as proxy:
        settings = make_settings(_proxied(pg_url, proxy.port), tmp_path, job_cache_ttl_s=0, auth_cache_ttl_s=0)
        key = new_key(direct, settings, "outage")
        from glorot_service.app import build_app

        with TestClient(build_app(settings, start_runner=False)) as client:
            r = client.post("/v1/experiments", json=TINY_SPEC, headers=auth(key))
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            assert client.get(f"/v1/jobs/{job_id}", headers=auth(key)).status_code == 200
            proxy.cut()
            for method, path, body in (("GET", f"/v1/jobs/{job_id}", None), ("POST", "/v1/experiments", TINY_SPEC)):
                r = client.request(method, path, json=body, headers=auth(key))
                assert r.status_code == 503, (method, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert int(r.headers["retry-after"]) > 0
                assert r.json()["type"].endswith("database-unavailable")
            assert client.get("/readyz").status_code == 503
            proxy.restore()
            # The pool's pre-ping replaces the connections the cut killed: the first request succeeds.
            assert client.get(f"/v1/jobs/{job_id}", headers=auth(key)).status_code == 200
            assert client.post("/v1/experiments", json=TINY_SPEC, headers=auth(key)).status_code == 202


# ------------------------------------------------------------------------------ Celery workers


def _log_has(worker: Worker, text: str) -> bool:
    return text.encode() in worker.log_path.read_bytes()


def _in_broker(queue: str, job_ids: set[str]) -> set[str]:
    """Which of ``job_ids`` have a message in Redis (waiting in ``queue`` or delivered, unacked)."""
    from worker.maintenance import pending_job_ids

    return job_ids & (pending_job_ids(f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}", queue) or set())


def _progressing(factory: Any, job_id: str, workers: tuple[Worker, ...]) -> None:
    def check() -> bool:
        job = job_row(factory, job_id)
        assert job.state not in TERMINAL, (job.state, job.error)
        return job.state == "RUNNING" and (job.progress or {}).get("step", 0) > 0

    try:
        _until(check, 180, f"job {job_id} running")
    except AssertionError:
        raise AssertionError("\n".join(w.tail() for w in workers)) from None


@pytest.mark.integration
def test_database_cut_under_celery_workers_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    from jobs.db import session_factory

    direct = session_factory(pg_url)  # the test's own view of the truth, around the proxy
    stale_s = 6.0
    with TcpProxy("127.0.0.1", make_url(pg_url).port or 5432) as proxy:
        # The periodic sweeper is pushed out of reach: whatever runs after the cut ran from its own message.
        env = Env(database_url=_proxied(pg_url, proxy.port), tmp=tmp_path, extra={
            "GLOROT_REAPER_STALE_AFTER_S": str(stale_s), "GLOROT_SWEEPER_QUEUED_AFTER_S": "600"})
        workers: list[Worker] = []
        with env.applied() as client:
            try:
                tenant = make_tenant(direct)
                workers += [Worker(env, "busy").start(), Worker(env, "idle").start()]
                running = submit(direct, client, tenant, long_spec(MEDIUM_STEPS))
                _progressing(direct, running, tuple(workers))
                busy = next(w for w in workers if _log_has(w, running))
                idle = next(w for w in workers if w is not busy)
                proxy.cut()
                cut_at = time.monotonic()
                # Submitted during the outage (straight to the database): the idle worker is handed them
                # and cannot claim them.
                queued = {submit(direct, client, tenant, TINY_SPEC) for _ in range(3)}
                _until(lambda: _log_has(idle, "goes back to the queue"), 120, "a delivery handed back")
                assert _in_broker(env.queue, queued) == queued  # none acknowledged away
                # The medium job's training ends during the outage; its finish keeps retrying.
                _until(lambda: _log_has(busy, f"finish of job {running}: database unreachable"), 180,
                       "the finish retried")
                # Outlast the reaper's window: every heartbeat is stale when the database returns.
                time.sleep(max(0.0, stale_s + 2 - (time.monotonic() - cut_at)))
                assert job_row(direct, running).state == "RUNNING"
                proxy.restore()
                job = wait_state(direct, running, TERMINAL, 120, workers=tuple(workers))
                assert (job.state, job.attempt) == ("SUCCEEDED", 1), (job.state, job.attempt, job.error)
                for job_id in queued:
                    job = wait_state(direct, job_id, TERMINAL, 180, workers=tuple(workers))
                    assert (job.state, job.attempt) == ("SUCCEEDED", 1), (job.state, job.attempt, job.error)
            finally:
                for w in workers:
                    w.stop()


@pytest.mark.integration
def test_broker_outage_that_lost_the_queue_is_swept_at_once(pg_url: str, tmp_path: Path) -> None:
    from jobs.db import session_factory

    direct = session_factory(pg_url)
    with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        env = Env(database_url=pg_url, tmp=tmp_path, extra={
            "GLOROT_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}",
            "GLOROT_SWEEPER_QUEUED_AFTER_S": "600"})
        workers: list[Worker] = []
        with env.applied() as client:
            try:
                tenant = make_tenant(direct)
                workers.append(Worker(env, "survivor").start())
                running = submit(direct, client, tenant, long_spec())  # runs until cancelled
                _progressing(direct, running, tuple(workers))
                queued = [submit(direct, client, tenant, TINY_SPEC) for _ in range(3)]  # waiting behind it
                assert _in_broker(env.queue, set(queued)) == set(queued)
                proxy.cut()
                # What a Redis restart without persistence does to this queue: its messages are gone.
                r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
                r.delete(env.queue, f"_kombu.binding.{env.queue}")
                time.sleep(3)
                proxy.restore()
                back = time.monotonic()
                # Every lost job has a message again within seconds (the maintenance loop looks at the
                # broker every second), not after the 600 s sweeper period. 30 s: room for a loaded machine.
                def redispatched() -> bool:
                    left = {j for j in queued if job_row(direct, j).state == "QUEUED"}
                    return _in_broker(env.queue, left) == left
                _until(redispatched, 30, "lost jobs re-dispatched")
                print(f"lost jobs re-dispatched {time.monotonic() - back:.1f} s after the broker returned")
                request_cancel(direct, running)  # frees the worker for the others
                assert wait_state(direct, running, TERMINAL, 120, workers=tuple(workers)).state == "CANCELLED"
                for job_id in queued:
                    job = wait_state(direct, job_id, TERMINAL, 180, workers=tuple(workers))
                    assert (job.state, job.attempt) == ("SUCCEEDED", 1), (job.state, job.error)
                fresh = submit(direct, client, tenant, TINY_SPEC)  # the worker still consumes new messages
                assert wait_state(direct, fresh, TERMINAL, 60, workers=tuple(workers)).state == "SUCCEEDED"
            finally:
                for w in workers:
                    w.stop()
