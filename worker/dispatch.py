"""The Celery dispatcher: how the API's submissions reach Celery workers (``GLOROT_BROKER_URL`` set).

It implements ``api.dispatch.Dispatcher`` by shape (a Protocol), without importing the API: the
composition (``glorot_service.app.build_app``) hands it to the app. One message per job, carrying
only its id (``worker.tasks.enqueue_job``). A failed publish is logged, not raised: the row stays
QUEUED and the sweeper (``worker.maintenance``) re-dispatches it.
"""

from __future__ import annotations

import logging

import redis
from kombu import Connection

from jobs.settings import Settings
from worker.tasks import enqueue_job

log = logging.getLogger("glorot.dispatch")


class CeleryDispatcher:
    """Celery mode: one message per job, carrying only its id; nothing runs in the API's process."""

    name = "celery"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self) -> None:
        """Nothing to start: workers run elsewhere."""

    def stop(self) -> None:
        """Nothing to stop."""

    def dispatch(self, job_id: str) -> None:
        try:
            enqueue_job(job_id)
        except Exception:
            log.exception("could not publish job %s; the sweeper will re-dispatch it", job_id)

    def check(self) -> None:
        check_broker(self.settings.broker_url or "")


def check_broker(url: str, timeout_s: float = 2.0) -> None:
    """Raise unless the broker at ``url`` answers (Redis PING; other transports: a kombu connection)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            client.ping()
        finally:
            client.close()
        return
    with Connection(url, connect_timeout=timeout_s) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
