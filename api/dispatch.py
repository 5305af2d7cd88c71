"""Dispatch: how a committed job reaches something that runs it. Called only *after* the job row's
transaction committed (PITFALLS: a worker must never look for a row that is not visible yet).

* ``LocalDispatcher`` (embedded default, no broker): wakes the local runner in this process, which
  also polls the table, so a lost wake-up only costs a poll interval.
* ``CeleryDispatcher`` (``GLOROT_BROKER_URL`` set): ``worker.tasks.enqueue_job(job_id)``; the message
  carries only the id. A failed publish is logged, not raised: the row stays QUEUED and the sweeper
  (``worker.maintenance``) re-dispatches it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from jobs.settings import Settings

log = logging.getLogger("glorot.dispatch")


class Dispatcher(Protocol):
    """What the API needs from a way of running jobs."""

    name: str

    def dispatch(self, job_id: str) -> None:
        """Make ``job_id`` (committed, QUEUED) reach a runner; must not raise."""

    def check(self) -> None:
        """Raise if jobs cannot currently be dispatched (used by /readyz)."""


class LocalDispatcher:
    """Embedded mode: the local runner claims QUEUED rows itself; dispatch only wakes it up."""

    name = "local"

    def __init__(self) -> None:
        self._wake: Callable[[], None] | None = None
        self._alive: Callable[[], bool] | None = None

    def attach(self, wake: Callable[[], None], alive: Callable[[], bool]) -> None:
        self._wake, self._alive = wake, alive

    def dispatch(self, job_id: str) -> None:
        if self._wake is not None:
            self._wake()

    def check(self) -> None:
        if self._alive is not None and not self._alive():
            raise RuntimeError("the local runner is not running")


class CeleryDispatcher:
    """Celery mode: one message per job, carrying only its id."""

    name = "celery"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def dispatch(self, job_id: str) -> None:
        try:
            from worker.tasks import enqueue_job

            enqueue_job(job_id)
        except Exception:
            log.exception("could not publish job %s; the sweeper will re-dispatch it", job_id)

    def check(self) -> None:
        check_broker(self.settings.broker_url or "")


def check_broker(url: str, timeout_s: float = 2.0) -> None:
    """Raise unless the broker at ``url`` answers (Redis PING; other transports: a kombu connection)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            client.ping()
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=timeout_s) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)


def make_dispatcher(settings: Settings) -> Dispatcher:
    return CeleryDispatcher(settings) if settings.broker_url else LocalDispatcher()
