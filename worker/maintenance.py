"""The sweeper and the reaper loop that every Celery worker runs beside itself, in a spawned process.

* The **reaper** (``jobs.lifecycle.reap``) settles RUNNING jobs whose heartbeat went stale:
  their worker died (SIGKILL, OOM, lost machine), or the hard time limit killed the job. It re-queues
  them while attempts remain, or fails them with a reason. Jobs it re-queues are dispatched at once.
* The **sweeper** (:func:`sweep_queued`) re-dispatches jobs left QUEUED longer than
  ``sweeper_queued_after_s`` since they were last dispatched: their message was lost (a Redis restart
  without persistence, kill -9 of a worker holding a message, a publish that failed after the commit),
  or a worker stopped consuming after a reconnect (celery#8030). On Redis it first looks in the
  broker: a job whose message is still in the queue (or delivered and unacknowledged) is waiting its
  turn behind long jobs, not lost, and gets no second message; otherwise every waiting job would get
  one more no-op message (and one more process fork) per period. A duplicate message is harmless (the
  claim is a conditional UPDATE), only wasteful. ``dispatched_at`` is advanced by a compare-and-set
  (``jobs.lifecycle.sweep``) before publishing, so many sweepers together send one message per job
  per period.
* **Outages.** The reaper reaps only once the database has answered it for ``reaper_stale_after_s``
  without error (``jobs.transient.ReapGate``): after an outage every heartbeat is as old as the outage,
  and the workers, alive and retrying, need a heartbeat interval to write again. The loop also watches
  the broker every :data:`BROKER_CHECK_INTERVAL_S` (:class:`BrokerWatch`): when Redis answers again
  after failing, or answers with another ``run_id`` (it restarted and, without persistence, lost every
  message), the sweeper runs at once for every job QUEUED for over :data:`BROKER_RETURN_MIN_AGE_S`,
  instead of after ``sweeper_queued_after_s``.

The loop is handed the function that publishes a job (``enqueue``), so this module does not import
the Celery app. It runs in its own process started with ``subprocess`` (never forked from the worker's
parent, see ``worker.celery_app.MaintenanceStep``) and exits when its parent worker is gone. It can
also run alone: ``python -m worker.maintenance`` (one per deployment is enough; more are harmless).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from jobs import lifecycle
from jobs.db import session_factory
from jobs.models import JobState, utcnow
from jobs.settings import Settings, get_settings
from jobs.transient import ReapGate, is_transient
from worker.tasks import enqueue_job

log = logging.getLogger("glorot.maintenance")

#: kombu's Redis hash of delivered, unacknowledged messages (``unacked_key`` transport option).
UNACKED_KEY = "unacked"
#: The task name of ``worker.tasks.run_job`` (not imported: that module builds the Celery app).
RUN_JOB = "glorot.run_job"
#: How often the loop asks the broker whether it is back or was restarted (seconds).
BROKER_CHECK_INTERVAL_S = 1.0
#: After the broker's return, QUEUED jobs dispatched longer ago than this are swept at once (seconds):
#: long enough that a message published a moment ago is already in the queue, where the sweeper sees it.
BROKER_RETURN_MIN_AGE_S = 1.0


def _job_id_of(raw: bytes | str) -> str | None:
    """The job id in a kombu Redis message (JSON envelope, base64 JSON body ``[args, kwargs, embed]``)."""
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, list):  # an ``unacked`` entry: [message, exchange, routing_key]
            envelope = envelope[0]
        if envelope.get("headers", {}).get("task") != RUN_JOB:
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def pending_job_ids(broker_url: str | None, queue: str) -> set[str] | None:
    """Ids of jobs with a message in the Redis broker: waiting in ``queue`` or delivered and not yet
    acknowledged. ``None`` when that cannot be known (another transport): the caller then assumes none.

    Raises on a Redis error (no sweep while the broker is down: nothing could be published anyway).
    """
    if not broker_url or not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        raws = list(client.lrange(queue, 0, -1))
        raws += list(client.hvals(UNACKED_KEY))
    finally:
        client.close()
    return {job_id for raw in raws if (job_id := _job_id_of(raw)) is not None}


class BrokerWatch:
    """Notices a Redis broker coming back: it failed to answer and now answers, or it answers with
    another ``run_id`` than before (restarted between two looks). Other transports: never."""

    def __init__(self, broker_url: str | None) -> None:
        self.client = None
        if broker_url and broker_url.startswith(("redis://", "rediss://", "unix://")):
            self.client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2,
                                               retry=Retry(NoBackoff(), 0))
        self.run_id: str | None = None
        self.down = False

    def returned(self) -> bool:
        """Look once; True when the broker is back (or new) since the last look."""
        if self.client is None:
            return False
        try:
            run_id = str(self.client.info("server").get("run_id"))
        except (redis.RedisError, OSError):
            if not self.down:
                log.warning("broker unreachable; its queue will be swept when it answers again")
            self.down = True
            return False
        back = self.down or (self.run_id is not None and run_id != self.run_id)
        if back:
            log.warning("broker %s; sweeping QUEUED jobs now", "restarted" if run_id != self.run_id else "back")
        self.down, self.run_id = False, run_id
        return back


def sweep_queued(
    factory: sessionmaker[Session],
    settings: Settings,
    enqueue: Callable[[str], Any],
    *,
    now: datetime | None = None,
    in_broker: Callable[[], set[str] | None] | None = None,
    older_than_s: float | None = None,
) -> list[str]:
    """Re-dispatch jobs QUEUED for longer than ``settings.sweeper_queued_after_s`` (or ``older_than_s``)
    since their last dispatch (or their creation, if never dispatched) whose message is not in the
    broker. Returns the ids it dispatched. ``in_broker`` lists the jobs with a message (default
    :func:`pending_job_ids`).

    Each job is taken by a conditional UPDATE of ``dispatched_at`` (compare-and-set on the value it
    read, and on the state still being QUEUED), committed *before* the message is published, so a
    worker never receives an id whose row is not visible, and two sweepers never both send it.
    """
    now = now or utcnow()
    rows = lifecycle.sweep_candidates(factory, settings, now, older_than_s=older_than_s)
    if not rows:
        return []
    if in_broker is None:
        in_broker = lambda: pending_job_ids(settings.broker_url, settings.celery_queue)  # noqa: E731
    waiting = in_broker() or set()
    taken = [job_id for job_id, seen in rows if job_id not in waiting and lifecycle.sweep(factory, job_id, seen, now)]
    for job_id in taken:
        try:
            enqueue(job_id)
        except Exception:  # the broker is down: the next sweep tries again
            log.exception("sweeper: could not dispatch job %s", job_id)
    if taken:
        log.warning("sweeper: re-dispatched %d job(s) left QUEUED: %s", len(taken), ", ".join(taken[:10]))
    return taken


def maintenance_once(factory: sessionmaker[Session], settings: Settings, enqueue: Callable[[str], Any], *,
                     gate: ReapGate | None = None) -> None:
    """One round: reap stale RUNNING jobs (dispatching those it re-queues), then sweep QUEUED ones.
    With a ``gate``, reap only when it is open (the database has answered long enough), and tell it
    whether the database answered."""
    try:
        if gate is None or gate.open():
            settled = lifecycle.reap(factory, settings)
        else:
            settled = {}
            with factory() as s:  # does the database answer?
                s.execute(text("SELECT 1"))
    except Exception as e:
        if gate is not None and is_transient(e):
            gate.failed()
        raise
    if gate is not None:
        gate.answered()
    for job_id in (j for j, state in settled.items() if state == JobState.QUEUED):
        try:
            enqueue(job_id)
        except Exception:
            log.exception("reaper: could not dispatch re-queued job %s", job_id)
    sweep_queued(factory, settings, enqueue)


def run_loop(settings: Settings, enqueue: Callable[[str], Any], *, parent_pid: int | None = None,
             stop: Callable[[], bool] = lambda: False) -> None:
    """Run :func:`maintenance_once` every ``reaper_interval_s`` until ``stop()``, a signal, or the death
    of ``parent_pid``, publishing jobs with ``enqueue``. A failing round (database or broker down) is
    logged and retried next round."""
    factory = session_factory(settings.resolved_database_url)
    interval = settings.reaper_interval_s
    gate = ReapGate(settings.reaper_stale_after_s)
    broker = BrokerWatch(settings.broker_url)
    log.info("maintenance: reaper and sweeper every %.1fs (parent %s)", interval, parent_pid)
    next_round = next_look = time.monotonic()
    db_down = False
    while not stop():
        if parent_pid is not None and os.getppid() != parent_pid:
            log.info("maintenance: parent worker %d is gone; exiting", parent_pid)
            return
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + BROKER_CHECK_INTERVAL_S
            if broker.returned():
                try:
                    sweep_queued(factory, settings, enqueue, older_than_s=BROKER_RETURN_MIN_AGE_S)
                except Exception:
                    broker.down = True  # try again at the next look
                    log.exception("sweep after the broker's return failed")
        if time.monotonic() >= next_round:
            try:
                maintenance_once(factory, settings, enqueue, gate=gate)
                db_down = False
            except Exception as e:
                if not is_transient(e):
                    log.exception("maintenance round failed; retrying in %.1fs", interval)
                elif not db_down:  # once per outage
                    log.warning("maintenance: database unreachable (%s); retrying every %.1fs",
                                type(e).__name__, interval)
                db_down = db_down or is_transient(e)
            next_round = time.monotonic() + interval
        time.sleep(min(0.25, interval))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.maintenance", description=__doc__.splitlines()[0])
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if not settings.broker_url:
        log.error("maintenance needs GLOROT_BROKER_URL (the embedded local runner reaps and sweeps itself)")
        return 2
    if args.once:
        maintenance_once(session_factory(settings.resolved_database_url), settings, enqueue_job)
        return 0
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_loop(settings, enqueue_job, parent_pid=args.parent_pid, stop=lambda: stopping)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
