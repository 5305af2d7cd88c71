"""Failures a GPU job queue must survive, with real worker processes, Postgres and Redis:

* the worker SIGKILLed in the middle of a job: another worker settles it (re-run → SUCCEEDED, or
  FAILED with the reason) within the reaper's window; it never stays RUNNING;
* Redis restarted (without persistence) while jobs are queued: every job still finishes.

Run alone: ``.venv/bin/pytest -q tests/service/test_celery_failures.py``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from celery_support import (
    TERMINAL,
    TINY_SPEC,
    Env,
    Worker,
    fresh_database,
    job_row,
    long_spec,
    make_tenant,
    redis_restarted,
    services_or_fail,
    submit,
    wait_state,
)

pytestmark = pytest.mark.integration

#: Steps of a job that runs for seconds (3 s idle, ~35 s on a loaded 2-core machine): long enough to be
#: caught mid-run, short enough to be re-run to the end.
MEDIUM_STEPS = 2000


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    services_or_fail()
    from jobs.db import session_factory

    with fresh_database() as url:
        env = Env(database_url=url, tmp=tmp_path)
        with env.applied() as client:
            factory = session_factory(url)
            workers: list[Worker] = []
            try:
                yield {"env": env, "client": client, "factory": factory, "tenant": make_tenant(factory),
                       "workers": workers}  # fmt: skip
            finally:
                for w in workers:
                    w.stop()


def _wait_progress(factory: Any, job_id: str, timeout: float, workers: tuple[Worker, ...]) -> Any:
    """Until the job is RUNNING and has reported a training step (so it is truly mid-job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_row(factory, job_id)
        if job.state == "RUNNING" and (job.progress or {}).get("step", 0) > 0:
            return job
        assert job.state not in TERMINAL, (job.state, job.error)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never got going:\n" + "\n".join(w.tail() for w in workers))


def test_sigkill_mid_job_then_another_worker_settles_it(stack: dict[str, Any]) -> None:
    factory, env = stack["factory"], stack["env"]
    a = Worker(env, "victim").start()
    stack["workers"].append(a)
    job_id = submit(factory, stack["client"], stack["tenant"], long_spec(MEDIUM_STEPS))
    _wait_progress(factory, job_id, 180, (a,))
    a.kill()  # parent, pool process and maintenance process, all at once: nothing gets to clean up
    killed_at = time.monotonic()
    assert job_row(factory, job_id).state == "RUNNING"
    b = Worker(env, "rescuer").start()
    stack["workers"].append(b)
    # Reaper window: stale after 10 s, looked at every 0.5 s; then the re-run itself.
    job = wait_state(factory, job_id, TERMINAL, 120, workers=(a, b))
    if job.state == "SUCCEEDED":
        assert job.attempt == 2, job.attempt  # the dead attempt was fenced out, the re-run won
    else:
        assert job.state == "FAILED" and "lost" in (job.error or ""), job.error
    print(f"settled {job.state} (attempt {job.attempt}) {time.monotonic() - killed_at:.1f}s after the kill")


def test_redis_restart_while_jobs_are_queued(stack: dict[str, Any]) -> None:
    factory, client, env = stack["factory"], stack["client"], stack["env"]
    w = Worker(env, "survivor").start()
    stack["workers"].append(w)
    running = submit(factory, client, stack["tenant"], long_spec(MEDIUM_STEPS))
    _wait_progress(factory, running, 180, (w,))
    queued = [submit(factory, client, stack["tenant"], TINY_SPEC) for _ in range(3)]
    with redis_restarted() as outage:  # every queued message is gone now
        assert outage < 60  # a restart, not a long outage (generous: the machine may be loaded)
    jobs = [wait_state(factory, j, TERMINAL, 180, workers=(w,)) for j in [running, *queued]]
    assert [j.state for j in jobs] == ["SUCCEEDED"] * 4, [(j.state, j.error) for j in jobs]
    # ...and the worker still consumes new messages after the reconnect.
    fresh = submit(factory, client, stack["tenant"], TINY_SPEC)
    assert wait_state(factory, fresh, TERMINAL, 60, workers=(w,)).state == "SUCCEEDED"


def test_sweeper_leaves_jobs_whose_message_waits_in_redis(stack: dict[str, Any]) -> None:
    """A job QUEUED behind long jobs still has its message in Redis: no second message for it. A job
    whose message is gone (or whose publish failed) is re-dispatched, once per period."""
    from datetime import timedelta

    from jobs.models import Job, utcnow
    from jobs.settings import get_settings
    from worker.maintenance import pending_job_ids, sweep_queued

    factory, client, settings = stack["factory"], stack["client"], get_settings()
    old = utcnow() - timedelta(seconds=60)
    with factory() as s, s.begin():
        waiting = Job(tenant_id=stack["tenant"], spec=TINY_SPEC, dispatched_at=old)
        lost = Job(tenant_id=stack["tenant"], spec=TINY_SPEC, dispatched_at=old)
        fresh = Job(tenant_id=stack["tenant"], spec=TINY_SPEC, dispatched_at=utcnow())
        s.add_all([waiting, lost, fresh])
    from celery_support import publish

    publish(client, waiting.id)  # no worker runs in this test: the message stays in the queue
    pending = pending_job_ids(settings.broker_url, settings.celery_queue)  # (may hold other tests' unacked ids)
    assert pending is not None and waiting.id in pending and lost.id not in pending
    sent: list[str] = []
    assert sweep_queued(factory, settings, sent.append) == [lost.id]
    assert sent == [lost.id]
    assert sweep_queued(factory, settings, sent.append) == []  # dispatched_at moved: not again this period
    assert job_row(factory, lost.id).dispatched_at > old
