"""The embedded mode's local runner with process isolation: a job whose process dies is FAILED with
the reason (the runner and the API live on), the hard time limit kills, and shutdown re-queues."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from service_support import LONG_SPEC, make_settings, wait_for
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_execute import make_job

from jobs.models import Job
from worker.local_runner import LocalRunner


def _job(factory: sessionmaker[Session], job_id: str) -> Job:
    with factory() as s:
        return s.execute(select(Job).where(Job.id == job_id)).scalar_one()


def test_process_runner_survives_a_killed_job_and_enforces_the_hard_limit(
    factory: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path, local_runner_isolation="process", job_soft_time_limit_s=60,
                             job_hard_time_limit_s=60.5)
    runner = LocalRunner(settings, factory)
    runner.start()
    try:
        killed = make_job(factory, LONG_SPEC)
        runner.wake()
        wait_for(lambda: _job(factory, killed), lambda j: (j.progress or {}).get("step", 0) > 0 and killed in
                 runner._slots, timeout=120, poll=0.2)
        os.kill(runner._slots[killed].proc.pid, signal.SIGKILL)  # a crash: segfault, OOM killer, …
        job = wait_for(lambda: _job(factory, killed), lambda j: j.state != "RUNNING", timeout=30, poll=0.2)
        assert job.state == "FAILED" and "killed by signal 9" in job.error, job.error
        assert runner.is_alive()

        # the hard limit: the supervisor kills the process (soft limit disabled by being longer)
        runner.settings = settings.model_copy(update={"job_hard_time_limit_s": 61.0, "job_soft_time_limit_s": 60.0})
        slow = make_job(factory, LONG_SPEC)
        runner.wake()
        wait_for(lambda: slow in runner._slots, bool, timeout=60, poll=0.05)
        runner._slots[slow].started -= 61.5  # as if it had run past the hard limit
        job = wait_for(lambda: _job(factory, slow), lambda j: j.state != "RUNNING", timeout=30, poll=0.2)
        assert job.state == "FAILED" and "hard time limit" in job.error, job.error

        # shutdown while a job runs: its process is killed and the job re-queued for the next start
        last = make_job(factory, LONG_SPEC)
        runner.wake()
        wait_for(lambda: _job(factory, last), lambda j: j.state == "RUNNING", timeout=60, poll=0.2)
    finally:
        runner.stop()
    job: Any = _job(factory, last)
    assert job.state == "QUEUED" and "server stopped" in job.progress["message"]


def test_memory_cap_fails_the_greedy_job_and_not_the_next(
    factory: sessionmaker[Session], db_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """GLOROT_JOB_MEMORY_LIMIT_MB caps the job's process (RLIMIT_DATA): a 420M-parameter model (1.7 GB of
    float32 weights alone) cannot be allocated under 768 MiB and FAILS with the allocator's error, while
    the runner goes on and a small job under the same cap SUCCEEDS."""
    from service_support import TINY_SPEC

    monkeypatch.setenv("GLOROT_MAX_PARAMETERS", str(10**9))  # make_job validates outside the settings
    settings = make_settings(db_url, tmp_path, local_runner_isolation="process", job_memory_limit_mb=768,
                             max_parameters=10**9)
    runner = LocalRunner(settings, factory)
    runner.start()
    try:
        greedy = make_job(factory, {"model": {"hidden": [20_000, 20_000]}, "train": {"steps": 1},
                                    "data": {"test_examples": 50},
                                    "diagnostics": {"monitor_examples": 20, "jacobian": {"mode": "off"}}})
        runner.wake()
        job = wait_for(lambda: _job(factory, greedy), lambda j: j.state in ("FAILED", "SUCCEEDED"), timeout=120,
                       poll=0.2)
        assert job.state == "FAILED" and "allocate memory" in job.error, job.error
        small = make_job(factory, TINY_SPEC)
        runner.wake()
        job = wait_for(lambda: _job(factory, small), lambda j: j.state in ("FAILED", "SUCCEEDED"), timeout=120,
                       poll=0.2)
        assert job.state == "SUCCEEDED", job.error
        assert runner.is_alive()
    finally:
        runner.stop()
