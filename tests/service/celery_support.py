"""Helpers for the Celery integration tests: a private Postgres database, a private Celery queue, and
real ``glorot worker`` processes started, stopped and killed like in production.

Isolation: each test module gets its own Postgres database (created from scratch and migrated with
Alembic) and its own queue name on Redis DB 11, so parallel runs and other engineers' tests never
consume each other's messages. Tasks always run in real worker processes, never eagerly in the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("GLOROT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 11
BROKER_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
#: The machine's own command for (re)starting Redis (env/machines/python-svc.md).
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip

TINY_SPEC: dict[str, Any] = {
    "model": {"hidden": [16, 16]},
    "train": {"steps": 20},
    "diagnostics": {"every": 10, "monitor_examples": 50, "jacobian": {"examples": 4}},
    "data": {"test_examples": 200},
}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def long_spec(steps: int = 200_000) -> dict[str, Any]:
    """A tiny network trained for many steps: a job that runs until it is cancelled or killed."""
    return {**TINY_SPEC, "train": {"steps": steps}, "diagnostics": {**TINY_SPEC["diagnostics"], "every": steps}}


def services_or_fail() -> None:
    """Fail (never skip) when Postgres or Redis cannot be reached: these are the integration tests."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5):
            pass
    except Exception as e:
        raise AssertionError(f"PostgreSQL at {PG_ADMIN_URL} unreachable (run .ci/run to start it): {e}") from e
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=5).ping()
    except Exception as e:
        raise AssertionError(f"Redis at {REDIS_HOST}:{REDIS_PORT} unreachable (run .ci/run to start it): {e}") from e


@contextlib.contextmanager
def fresh_database(prefix: str = "glorot_celery") -> Iterator[str]:
    """A new, migrated Postgres database; yields its SQLAlchemy URL and drops it afterwards."""
    from jobs.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        from jobs.db import dispose_engines

        dispose_engines()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Env:
    """The settings a test run's workers and the test process share (as GLOROT_* variables)."""

    database_url: str
    tmp: Path
    queue: str = field(default_factory=lambda: f"glorot-test-{uuid.uuid4().hex[:10]}")
    extra: dict[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        return {
            "GLOROT_DATABASE_URL": self.database_url,
            "GLOROT_BROKER_URL": BROKER_URL,
            "GLOROT_CELERY_QUEUE": self.queue,
            "GLOROT_HOME": str(self.tmp / "data"),
            "GLOROT_API_KEY_SECRET": "test-secret-" + "x" * 32,
            # Short windows so failures settle in seconds: heartbeat 0.5 s, stale after 10 s (20 missed
            # heartbeats: a job process starved on a loaded machine is not taken for dead).
            "GLOROT_HEARTBEAT_INTERVAL_S": "0.5",
            "GLOROT_REAPER_STALE_AFTER_S": "10",
            "GLOROT_REAPER_INTERVAL_S": "0.5",
            "GLOROT_SWEEPER_QUEUED_AFTER_S": "2",
            "GLOROT_PROGRESS_INTERVAL_S": "0.5",
            "GLOROT_CANCEL_POLL_INTERVAL_S": "0.2",
            "GLOROT_MAX_ATTEMPTS": "2",
            **self.extra,
        }

    @contextlib.contextmanager
    def applied(self) -> Iterator[Celery]:
        """Set the variables in this process too, and yield a Celery client app made from them, the
        way the API process makes its own (``worker.celery_app.make_app``)."""
        from jobs.settings import get_settings
        from worker.celery_app import make_app

        old = {k: os.environ.get(k) for k in self.variables()}
        os.environ.update(self.variables())
        get_settings.cache_clear()
        client = make_app(get_settings())
        try:
            yield client
        finally:
            client.close()
            with contextlib.suppress(redis.RedisError):  # leave no messages behind in the shared Redis
                redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB).delete(self.queue)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            get_settings.cache_clear()


class Worker:
    """A real ``glorot worker`` process (its own session, so SIGKILL reaches the whole group)."""

    def __init__(self, env: Env, name: str) -> None:
        self.env, self.name = env, name
        self.log_path = env.tmp / f"worker-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        cmd = [sys.executable, "-m", "glorot_core.cli", "worker", "--name", self.name, "--loglevel", "INFO"]
        env = {**os.environ, **self.env.variables(), "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: parent, pool process and maintenance process."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the group if it does not stop in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):  # anything left in its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def make_tenant(factory: sessionmaker[Session], name: str = "celery-tests") -> int:
    from jobs.models import Tenant

    with factory() as s, s.begin():
        tenant = s.execute(select(Tenant).where(Tenant.name == name)).scalar_one_or_none()
        if tenant is None:
            tenant = Tenant(name=name)
            s.add(tenant)
            s.flush()
        return tenant.id


def publish(client: Celery, job_id: str, **options: Any) -> None:
    """Send a ``run_job`` message for ``job_id`` (what ``worker.tasks.enqueue_job`` sends)."""
    from worker.tasks import RUN_JOB

    client.send_task(RUN_JOB, args=[job_id], **options)


def submit(factory: sessionmaker[Session], client: Celery, tenant_id: int, spec: dict[str, Any] | None = None) -> str:
    """What the API's submit does: commit a QUEUED row, then (only then) publish its id."""
    from jobs.models import Job, utcnow

    with factory() as s, s.begin():
        job = Job(tenant_id=tenant_id, spec=spec or TINY_SPEC, dispatched_at=utcnow())
        s.add(job)
        s.flush()
        job_id = job.id
    publish(client, job_id)
    return job_id


def job_row(factory: sessionmaker[Session], job_id: str) -> Any:
    from jobs.models import Job

    with factory() as s:
        return s.execute(select(Job).where(Job.id == job_id)).scalar_one()


def wait_state(
    factory: sessionmaker[Session], job_id: str, states: set[str], timeout: float, *, workers: tuple[Worker, ...] = ()
) -> Any:
    """Poll the job row (the truth) until its state is in ``states``; fail with the workers' logs."""
    deadline = time.monotonic() + timeout
    while True:
        job = job_row(factory, job_id)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- worker {w.name}:\n{w.tail()}" for w in workers)
            raise AssertionError(f"job {job_id} still {job.state} after {timeout}s (wanted {states}): "
                                 f"attempt={job.attempt} error={job.error}\n{logs}")  # fmt: skip
        time.sleep(0.05)


def request_cancel(factory: sessionmaker[Session], job_id: str) -> None:
    """What POST /v1/jobs/{id}/cancel does for a RUNNING job: set the flag the job polls."""
    from jobs.models import Job, utcnow

    with factory() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, cancel_requested_at=utcnow()))


def redis_ping() -> bool:
    """One PING, no retries (redis-py's default retries with backoff would stretch the outage)."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(timeout: float = 20.0) -> None:
    """Start Redis with the machine's command (if it is down) and wait until it answers."""
    if not redis_ping():
        Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(REDIS_START, check=False, capture_output=True)
    deadline = time.monotonic() + timeout
    while not redis_ping():
        if time.monotonic() > deadline:
            raise AssertionError("Redis did not come back")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_restarted() -> Iterator[float]:
    """Shut the shared Redis down (no save: every message is lost, like a crash of a server without
    persistence) and start it again at once; yields the outage in seconds. Restores Redis even if
    the body fails."""
    t0 = time.monotonic()
    try:
        with contextlib.suppress(redis.RedisError):
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, retry=Retry(NoBackoff(), 0)).shutdown(nosave=True)
        deadline = time.monotonic() + 10
        while redis_ping() and time.monotonic() < deadline:
            time.sleep(0.02)
        start_redis()
        yield time.monotonic() - t0
    finally:
        start_redis()
