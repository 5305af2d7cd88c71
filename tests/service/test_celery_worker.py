"""A real ``glorot worker`` process against the real Postgres and Redis: the happy path, a message
delivered twice, cancellation freeing the worker, and the hard time limit's bookkeeping.

Run alone: ``.venv/bin/pytest -q tests/service/test_celery_worker.py``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

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
    publish,
    request_cancel,
    services_or_fail,
    submit,
    wait_state,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A migrated database, a private queue, a client app and one running worker for the module."""
    services_or_fail()
    from jobs.db import session_factory

    tmp = Path(tmp_path_factory.mktemp("celery-worker"))
    with fresh_database() as url:
        env = Env(database_url=url, tmp=tmp)
        with env.applied() as client:
            factory = session_factory(url)
            worker = Worker(env, "w1").start()
            try:
                yield {"env": env, "client": client, "factory": factory, "tenant": make_tenant(factory),
                       "worker": worker}  # fmt: skip
            finally:
                worker.stop()


def test_submit_runs_to_succeeded_with_a_report(stack: dict[str, Any]) -> None:
    factory, w = stack["factory"], stack["worker"]
    spec = {**TINY_SPEC, "train": {"steps": 300}, "diagnostics": {**TINY_SPEC["diagnostics"], "every": 100}}
    job_id = submit(factory, stack["client"], stack["tenant"], spec)
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = job_row(factory, job_id).state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in TERMINAL:
            break
        time.sleep(0.01)
    assert seen[-1] == "SUCCEEDED", (seen, job_row(factory, job_id).error, w.tail())
    assert "RUNNING" in seen, seen
    assert seen.index("RUNNING") < seen.index("SUCCEEDED")
    job = job_row(factory, job_id)
    assert job.attempt == 1 and job.started_at and job.finished_at and job.error is None
    assert job.progress["fraction"] == 1.0 and job.progress["phase"] == "done"
    from jobs import reports
    from jobs.models import Report

    with factory() as s:
        report = s.execute(select(Report).where(Report.job_id == job_id)).scalar_one()
        body = reports.load(s, job_id)
    assert report.attempt == 1 and body is not None
    assert body["schema_version"] == 1
    assert [layer["index"] for layer in body["layers"]] == [1, 2]
    assert [snap["step"] for snap in body["snapshots"]] == [0, 100, 200, 300]
    first = body["snapshots"][0]["layers"][0]
    for key in ("activation", "saturation", "backprop_grad", "weight_grad", "jacobian"):
        assert key in first, key


def test_a_message_delivered_twice_runs_once(stack: dict[str, Any]) -> None:
    factory, client, w = stack["factory"], stack["client"], stack["worker"]
    job_id = submit(factory, client, stack["tenant"], TINY_SPEC)
    # The same message again (same task id: a late-ack redelivery) and a sweeper-style second message.
    publish(client, job_id, task_id=f"dup-{job_id}")
    publish(client, job_id, task_id=f"dup-{job_id}")
    publish(client, job_id)
    wait_state(factory, job_id, {"SUCCEEDED"}, 60, workers=(w,))
    # FIFO with one worker: once a job submitted after the duplicates is done, they were all consumed.
    sentinel = submit(factory, client, stack["tenant"], TINY_SPEC)
    wait_state(factory, sentinel, {"SUCCEEDED"}, 60, workers=(w,))
    from jobs.models import Report

    job = job_row(factory, job_id)
    assert job.state == "SUCCEEDED" and job.attempt == 1
    with factory() as s:
        assert s.execute(select(func.count()).select_from(Report).where(Report.job_id == job_id)).scalar_one() == 1
    log = w.log_path.read_text(errors="replace")
    assert log.count(f"job {job_id}: not claimed") == 3, w.tail()


def test_cancel_a_running_job_frees_the_worker(stack: dict[str, Any]) -> None:
    factory, client, w = stack["factory"], stack["client"], stack["worker"]
    job_id = submit(factory, client, stack["tenant"], long_spec())
    wait_state(factory, job_id, {"RUNNING"}, 60, workers=(w,))
    time.sleep(0.5)  # let it train a little
    request_cancel(factory, job_id)
    # The job polls its cancel flag every 0.2 s; the wait is long only so a loaded machine cannot fail
    # it. The job has far more steps than it can run meanwhile, so CANCELLED (not SUCCEEDED) is the check.
    job = wait_state(factory, job_id, TERMINAL, 60, workers=(w,))
    assert job.state == "CANCELLED", (job.state, job.error)
    # The worker is free: the next job runs to the end.
    nxt = submit(factory, client, stack["tenant"], TINY_SPEC)
    assert wait_state(factory, nxt, TERMINAL, 60, workers=(w,)).state == "SUCCEEDED"


def test_hard_time_limit_fails_the_row_from_the_worker_parent(stack: dict[str, Any]) -> None:
    """Celery calls ``on_failure`` in the worker's parent when the hard limit kills the job's process;
    it fails the RUNNING row if the killed delivery still holds it (and only then)."""
    from billiard.exceptions import TimeLimitExceeded

    from jobs.models import Job, utcnow
    from worker.tasks import delivery_worker_id, run_job

    factory = stack["factory"]
    with factory() as s, s.begin():
        mine = Job(tenant_id=stack["tenant"], spec=TINY_SPEC, state="RUNNING", attempt=1,
                   worker_id=delivery_worker_id("task-a"), started_at=utcnow(), heartbeat_at=utcnow())  # fmt: skip
        other = Job(tenant_id=stack["tenant"], spec=TINY_SPEC, state="RUNNING", attempt=2,
                    worker_id=delivery_worker_id("task-b"), started_at=utcnow(), heartbeat_at=utcnow())  # fmt: skip
        s.add_all([mine, other])
    run_job.on_failure(TimeLimitExceeded(5.0), "task-a", (mine.id,), {}, None)
    run_job.on_failure(TimeLimitExceeded(5.0), "task-stale", (other.id,), {}, None)  # not its holder
    a, b = job_row(factory, mine.id), job_row(factory, other.id)
    assert a.state == "FAILED" and "hard time limit" in a.error
    assert b.state == "RUNNING"
    with factory() as s, s.begin():  # leave nothing RUNNING behind for the other tests
        s.execute(update(Job).where(Job.id == other.id).values(state="FAILED", error="test cleanup"))
