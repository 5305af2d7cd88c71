"""Which database errors are transient, and a bounded retry with backoff for the writes that must land.

A database restart, a failover or a cut network shows up as SQLAlchemy ``OperationalError`` /
``InterfaceError`` (psycopg: the server closed the connection, "the database system is shutting
down", connection refused) or a ``DBAPIError`` whose connection SQLAlchemy invalidated as a
disconnect. Those are worth retrying: the same statement succeeds once the database is back. Anything
else (a constraint, a programming error, a missing table) fails the same way every time and is raised
at once. On SQLite only a locked/busy database counts as transient.

:func:`retry_transient` retries an operation for a bounded time (``db_retry_s``, longer than a
database restart) with exponential backoff capped at :data:`MAX_DELAY_S`, so a writer notices the
database's return within about two seconds. Retrying is only safe for idempotent operations: the
fenced writes of ``jobs.lifecycle`` are conditional UPDATEs, so running one again either does what the
first try did not, or touches nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("glorot.db")

T = TypeVar("T")

#: First pause after a transient error, and the longest pause between two tries (seconds).
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0

_SQLITE_TRANSIENT = ("locked", "busy")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database error that goes away when the database is reachable again."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc.orig, sqlite3.Error):
            return any(word in str(exc.orig).lower() for word in _SQLITE_TRANSIENT)
        return isinstance(exc, OperationalError | InterfaceError)
    # psycopg raised outside SQLAlchemy's wrapping (e.g. while connecting in a pool event)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency of the service
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def retry_transient(op: Callable[[], T], *, timeout_s: float, what: str,
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """``op()``, tried again after each transient database error until ``timeout_s`` has passed since
    the first try (then the last error is raised); any other error is raised at once.
    ``timeout_s`` 0 means one try."""
    start = time.monotonic()
    delay = FIRST_DELAY_S
    failures = 0
    while True:
        try:
            result = op()
        except Exception as e:
            waited = time.monotonic() - start
            if not is_transient(e) or waited + delay > timeout_s:
                if failures:
                    log.error("%s: database still unreachable after %.1f s; giving up", what, waited)
                raise
            if failures == 0:
                log.warning("%s: database unreachable (%s); retrying for up to %g s", what,
                            str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__,
                            timeout_s)
            failures += 1
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if failures:
            log.warning("%s: database reachable again after %.1f s (%d retries)", what,
                        time.monotonic() - start, failures)
        return result


class ReapGate:
    """When a reaper may trust stale heartbeats: only once the database has answered it without error
    for ``stale_after_s`` (``reaper_stale_after_s``).

    During a database outage no worker can write its heartbeat, so when the database returns every
    running job's heartbeat is as old as the outage, although its worker is alive and retrying. Its
    watcher writes again within ``heartbeat_interval_s`` (plus :data:`MAX_DELAY_S`) of the return, so a
    reaper that waits ``stale_after_s`` after it regained the database only sees heartbeats written
    since, and reaps only workers that truly stopped. An outage long enough to make a heartbeat stale
    lasts longer than ``stale_after_s - heartbeat_interval_s``, which is more than the reaper's interval,
    so the reaper's own rounds see it. A reaper that starts while the database answers may reap at once.
    """

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s, self.clock = stale_after_s, clock
        self._ok_since: float | None = float("-inf")

    def failed(self) -> None:
        """The database did not answer (a transient error)."""
        if self._ok_since is not None:
            log.warning("reaper: database unreachable; no reaping until it has answered for %g s",
                        self.stale_after_s)
        self._ok_since = None

    def answered(self) -> None:
        """The database answered."""
        if self._ok_since is None:
            self._ok_since = self.clock()

    def open(self) -> bool:
        """Whether the reaper may reap now."""
        return self._ok_since is not None and self.clock() - self._ok_since >= self.stale_after_s
