"""The fork server that starts the local runner's job processes, and the job process a Celery pool
process forks per job: how they start (warm, isolated), how they end, and their failure modes (the
fork server dies, a job is killed at its hard limit or runs out of its memory cap)."""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery_support import TERMINAL as CELERY_TERMINAL
from celery_support import Env, Worker, fresh_database, job_row, long_spec, make_tenant, services_or_fail, submit
from celery_support import wait_state as celery_wait_state
from service_support import LONG_SPEC, TINY_SPEC, make_settings, wait_for
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_execute import make_job

from jobs.models import Job
from worker.forkserver import ForkServer, JobProcess
from worker.local_runner import LocalRunner

# ------------------------------------------------------------------ job targets (run in forked children)


def _describe_self(path: str) -> None:
    """Write what the job process inherited: loaded modules, parent, signal dispositions."""
    Path(path).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "preloaded": "colorsys" in sys.modules,
                "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
                "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            }
        )
    )


def _start_a_child() -> None:
    """A job that uses multiprocessing itself (its fork server is a daemonic multiprocessing child)."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=os.getpid)
    child.start()
    child.join()
    sys.exit(child.exitcode)


def _fail() -> None:
    raise RuntimeError("the job's code raised")


def _stubborn(path: str) -> None:
    """A job that ignores every polite signal and never ends by itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(path).write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def _allocate(headroom_mb: int, mb: int) -> None:
    """Cap this process's data segment ``headroom_mb`` MiB above what it inherited (RLIMIT_DATA, as
    worker.limits does), then allocate ``mb`` MiB."""
    with open("/proc/self/status") as f:
        used_kb = int(next(line for line in f if line.startswith("VmData:")).split()[1])
    cap = used_kb * 1024 + headroom_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    block = bytearray(mb * 1024 * 1024)
    block[-1] = 1


# ------------------------------------------------------------------------------------------ helpers


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for a reaper that is not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _data_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return next(line for line in f if line.startswith("Max data size")).split()[3]


def _ended(job: JobProcess) -> str:
    assert job.join(60), "the fork server did not report the job process's end"
    assert job.exit_reason is not None
    return job.exit_reason


@pytest.fixture
def server() -> Any:
    ended = threading.Semaphore(0)
    fs = ForkServer(notify=ended.release, modules=("colorsys",))  # a module nothing else imports
    fs.ended = ended  # type: ignore[attr-defined]
    yield fs
    fs.stop()


# ------------------------------------------------------------------------------------- fork server


def test_job_processes_are_forked_warm_and_report_how_they_end(server: Any, tmp_path: Path) -> None:
    server.start()
    assert server.ended.acquire(timeout=300) and server.ready()  # told when the server is ready
    out = tmp_path / "self.json"
    job = server.fork(_describe_self, (str(out),))
    assert _ended(job) == "exited with code 0"
    assert server.ended.acquire(timeout=5)  # and when a job process ends
    seen = json.loads(out.read_text())
    assert seen["pid"] == job.pid and seen["ppid"] == server.pid != os.getpid()  # a child of the server
    assert seen["preloaded"]  # the server's preloaded modules are already there
    assert seen["sigint_ignored"] and seen["sigterm_default"]

    assert _ended(server.fork(_fail)) == "exited with code 1"
    assert _ended(server.fork(_start_a_child)) == "exited with code 0"

    marker = tmp_path / "stubborn.pid"
    stubborn = server.fork(_stubborn, (str(marker),))
    wait_for(lambda: marker.exists(), bool, timeout=60, poll=0.05)
    stubborn.kill()
    assert _ended(stubborn) == f"killed by signal {signal.SIGKILL.value}"
    stubborn.kill()  # already reaped: the server signals nothing (the pid may belong to another process now)
    assert server.is_alive()


def test_a_dead_fork_server_takes_its_jobs_along_and_is_replaced(server: Any, tmp_path: Path) -> None:
    marker = tmp_path / "stubborn.pid"
    job = server.fork(_stubborn, (str(marker),))
    wait_for(lambda: marker.exists(), bool, timeout=60, poll=0.05)
    first = server.pid
    os.kill(first, signal.SIGKILL)
    assert _ended(job) == "died with the fork server" and job.server_lost
    wait_for(lambda: _gone(job.pid), bool, timeout=30, poll=0.05)  # PR_SET_PDEATHSIG: no orphan left running

    out = tmp_path / "after.json"
    assert _ended(server.fork(_describe_self, (str(out),))) == "exited with code 0"  # a new server
    assert server.pid != first and json.loads(out.read_text())["ppid"] == server.pid


def test_the_memory_cap_binds_the_job_process_alone(server: Any) -> None:
    """Over its RLIMIT_DATA cap a job's allocation fails (MemoryError, exit code 1); a job under the same
    cap succeeds, and the fork server's own limit is untouched."""
    server.start()
    before = _data_limit(server.pid)
    assert _ended(server.fork(_allocate, (256, 1024))) == "exited with code 1"
    assert _ended(server.fork(_allocate, (256, 16))) == "exited with code 0"
    assert _data_limit(server.pid) == before


# ------------------------------------------------------------------------------------- local runner


def _job(factory: sessionmaker[Session], job_id: str) -> Job:
    with factory() as s:
        return s.execute(select(Job).where(Job.id == job_id)).scalar_one()


def test_runner_survives_its_fork_server_dying(factory: sessionmaker[Session], db_url: str, tmp_path: Path) -> None:
    """The fork server is killed under a running job: the job is re-queued and runs again under a new
    fork server (attempts left), or FAILS saying why (none left); the runner goes on either way."""
    settings = make_settings(db_url, tmp_path, local_runner_isolation="process", max_attempts=2)
    runner = LocalRunner(settings, factory)
    runner.start()
    try:
        job_id = make_job(factory, LONG_SPEC)
        runner.wake()
        wait_for(lambda: _job(factory, job_id), lambda j: (j.progress or {}).get("step", 0) > 0, timeout=120,
                 poll=0.2)  # fmt: skip
        os.kill(runner._forkserver.pid, signal.SIGKILL)
        job = wait_for(lambda: _job(factory, job_id), lambda j: j.attempt == 2 and (j.progress or {}).get(
            "step", 0) > 0, timeout=120, poll=0.2)  # fmt: skip
        assert job.state == "RUNNING"

        os.kill(runner._forkserver.pid, signal.SIGKILL)  # again, on the last attempt
        job = wait_for(lambda: _job(factory, job_id), lambda j: j.state != "RUNNING", timeout=60, poll=0.2)
        assert job.state == "FAILED" and "fork server" in job.error, job.error

        small = make_job(factory, TINY_SPEC)
        runner.wake()
        job = wait_for(lambda: _job(factory, small), lambda j: j.state in ("FAILED", "SUCCEEDED"), timeout=120,
                       poll=0.2)  # fmt: skip
        assert job.state == "SUCCEEDED", job.error
        assert runner.is_alive()
    finally:
        runner.stop()


def test_runner_kills_a_job_at_its_hard_limit_and_goes_on(
    factory: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    """Generating 100 000 test examples takes seconds and never looks at the cancel/soft-limit flag, so
    only the hard limit (1.5 s after the job's process started) can stop it: the runner kills the
    process through the fork server and FAILS the job with the reason, then runs the next job."""
    settings = make_settings(db_url, tmp_path, local_runner_isolation="process", job_soft_time_limit_s=1.0,
                             job_hard_time_limit_s=1.5)  # fmt: skip
    runner = LocalRunner(settings, factory)
    runner.start()
    try:
        slow = make_job(
            factory,
            {
                "model": {"hidden": [8]},
                "train": {"steps": 0},
                "data": {"test_examples": 100_000},
                "diagnostics": {"monitor_examples": 20, "jacobian": {"mode": "off"}},
            },
        )
        runner.wake()
        job = wait_for(lambda: _job(factory, slow), lambda j: j.state != "RUNNING" and j.state != "QUEUED",
                       timeout=120, poll=0.1)  # fmt: skip
        assert job.state == "FAILED" and "hard time limit of 1.5 s" in job.error, job.error

        # the next job gets time enough even on a loaded machine
        runner.settings = settings.model_copy(update={"job_soft_time_limit_s": 600.0, "job_hard_time_limit_s": 601.0})
        small = make_job(factory, TINY_SPEC)
        runner.wake()
        job = wait_for(lambda: _job(factory, small), lambda j: j.state in ("FAILED", "SUCCEEDED"), timeout=120,
                       poll=0.2)  # fmt: skip
        assert job.state == "SUCCEEDED", job.error
        assert runner.is_alive()
    finally:
        runner.stop()


# ------------------------------------------------------------------------------------------- Celery


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return kids


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


@pytest.mark.integration
def test_celery_job_process_killed_fails_the_job_and_its_pool_process_runs_the_next(tmp_path: Path) -> None:
    """A real worker: the job runs in a process forked by the pool process. SIGKILL it (a crash, the OOM
    killer): the pool process FAILS the job at once with how its process ended (no wait for the reaper),
    stays, and runs the next job in a new job process."""
    services_or_fail()
    from jobs.db import session_factory

    with fresh_database() as url:
        env = Env(database_url=url, tmp=tmp_path)
        with env.applied() as client:
            factory = session_factory(url)
            tenant = make_tenant(factory)
            worker = Worker(env, "forks").start()
            try:
                assert worker.proc is not None
                job_id = submit(factory, client, tenant, long_spec())
                wait_for(lambda: job_row(factory, job_id), lambda j: (j.progress or {}).get("step", 0) > 0,
                         timeout=120, poll=0.1)  # fmt: skip
                main = worker.proc.pid
                pools = [p for p in _children(main) if _cmdline(p) == _cmdline(main)]  # forked, not spawned
                jobs = [c for p in pools for c in _children(p)]
                assert len(pools) == 1 and len(jobs) == 1, (pools, jobs)
                os.kill(jobs[0], signal.SIGKILL)
                job = celery_wait_state(factory, job_id, CELERY_TERMINAL, 30, workers=(worker,))
                assert job.state == "FAILED" and "killed by signal 9" in job.error, job.error

                nxt = submit(factory, client, tenant)
                assert celery_wait_state(factory, nxt, CELERY_TERMINAL, 120, workers=(worker,)).state == "SUCCEEDED"
                assert pools[0] in _children(main)  # the same pool process: not replaced
            finally:
                worker.stop()
