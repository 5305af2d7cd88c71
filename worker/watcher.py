"""The watcher thread that runs beside a job: heartbeat, progress, streamed metric rows, cancel flag,
loss of the claim, soft time limit.

The training loop never waits on the database: its callbacks (:meth:`Watcher.set_progress`,
:meth:`Watcher.add_metric_rows`) only store what the watcher writes later. Every
``progress_interval_s`` at most, the watcher writes the latest progress and the metric rows queued
since the last write, in one transaction that starts with the fenced heartbeat UPDATE
(``jobs.lifecycle.beat``, which also locks the row): a fenced-out attempt writes no point. It writes
a bare heartbeat at least every ``heartbeat_interval_s`` and reads the row's state and
``cancel_requested`` every tick (``cancel_poll_interval_s`` at most).

While the database cannot be reached the run goes on: each tick tries the (idempotent, fenced) write
again, the progress and the metric rows wait in memory, and the outage is logged once when it starts
and once when it ends. A worker that cannot reach the database is not lost; the reaper gives it
``reaper_stale_after_s`` after the database returns to beat again (``worker.maintenance``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from jobs import lifecycle
from jobs.db import transaction
from jobs.metrics import MetricRow, write_metric_rows
from jobs.progress import JobProgress
from jobs.settings import Settings
from jobs.transient import is_transient

log = logging.getLogger("glorot.watcher")

#: Streamed metric rows a watcher holds while the database is unreachable; beyond this new rows are
#: dropped (a SUCCEEDED job still gets every row from its report).
MAX_PENDING_METRIC_ROWS = 2_000_000


@dataclass
class _Due:
    """When each kind of write last happened (monotonic seconds)."""

    beat: float
    progress: float
    rows: float


class Watcher(threading.Thread):
    """Beside the run of ``attempt`` of ``job_id``; ``should_stop`` is the run's cancel check."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, attempt: int, settings: Settings) -> None:
        super().__init__(name=f"glorot-watch-{job_id[:8]}", daemon=True)
        self.factory, self.job_id, self.attempt, self.settings = factory, job_id, attempt, settings
        self.stop_event = threading.Event()
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.started = time.monotonic()
        self._pending: JobProgress | None = None
        self._rows: list[MetricRow] = []
        self._dropped_rows = 0
        self._flush_on_stop = False
        self._lock = threading.Lock()

    # ------------------------------------------------ called from the training thread (never blocks on I/O)
    def set_progress(self, progress: JobProgress) -> None:
        with self._lock:
            self._pending = progress

    def add_metric_rows(self, rows: Iterable[MetricRow]) -> None:
        """Queue one snapshot's metric rows for the next write (all of them, or none when over the cap)."""
        batch = list(rows)
        with self._lock:
            if len(self._rows) + len(batch) > MAX_PENDING_METRIC_ROWS:
                self._dropped_rows += len(batch)
                return
            self._rows.extend(batch)

    @property
    def over_soft_limit(self) -> bool:
        return time.monotonic() - self.started > self.settings.job_soft_time_limit_s

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set() or self.over_soft_limit

    def stop(self, *, flush: bool) -> None:
        """End the loop and wait for it; ``flush``: first write the metric rows still queued (a run that
        ends without results keeps its series; after a success ``lifecycle.finish`` rewrites them all)."""
        self._flush_on_stop = flush
        self.stop_event.set()
        self.join(timeout=10)

    # ------------------------------------------------------------------------------ the watcher's own thread
    def run(self) -> None:
        st = self.settings
        now = time.monotonic()
        due = _Due(now, now, now)
        tick = min(st.cancel_poll_interval_s, st.heartbeat_interval_s, max(st.progress_interval_s, 0.05))
        down_since: float | None = None
        while not self.stop_event.wait(tick):
            try:
                self._tick(due, time.monotonic())
            except Exception as e:  # the database is unreachable: keep running, try again next tick
                if down_since is None:
                    down_since = time.monotonic()
                    if is_transient(e):
                        log.warning("job %s: database unreachable (%s); the run goes on, writes wait",
                                    self.job_id, type(e).__name__)
                    else:
                        log.exception("job %s: watcher could not write", self.job_id)
                continue
            if down_since is not None:
                log.warning("job %s: database reachable again after %.1f s", self.job_id,
                            time.monotonic() - down_since)
                down_since = None
        if self._flush_on_stop and not self.lost.is_set():
            self._flush()

    def _tick(self, due: _Due, now: float) -> None:
        """One round: write what is due (fenced), then read the row's state and cancel flag."""
        interval = self.settings.progress_interval_s
        progress = self._take_progress() if now - due.progress >= interval else None
        rows = self._take_rows() if now - due.rows >= interval else []
        if progress is not None:
            due.progress = now
        if rows:
            due.rows = now
        if progress is not None or rows or now - due.beat >= self.settings.heartbeat_interval_s:
            due.beat = now
            if not self._write(progress, rows):
                self._lose()
                return
        self._look()

    def _take_progress(self) -> JobProgress | None:
        with self._lock:
            progress, self._pending = self._pending, None
        return progress

    def _take_rows(self) -> list[MetricRow]:
        with self._lock:
            rows, self._rows = self._rows, []
            dropped, self._dropped_rows = self._dropped_rows, 0
        if dropped:
            log.warning("job %s: %d streamed metric rows dropped (database unreachable too long)", self.job_id, dropped)
        return rows

    def _write(self, progress: JobProgress | None, rows: list[MetricRow]) -> bool:
        """One transaction: the fenced heartbeat (with ``progress``), then, only if it touched the row,
        the queued metric rows. False when this attempt no longer holds the job (nothing written). On a
        database error the rows go back to the queue and the error propagates."""
        try:
            with transaction(self.factory) as s:
                owned = lifecycle.beat(s, self.job_id, self.attempt, progress)
                if owned and rows:
                    write_metric_rows(s, self.job_id, rows, upsert=True)
        except Exception:
            with self._lock:
                self._rows[:0] = rows
                if progress is not None and self._pending is None:
                    self._pending = progress
            raise
        return owned

    def _look(self) -> None:
        """Read the row: lost the claim → ``lost``; cancel requested → ``cancel``."""
        now = lifecycle.holder(self.factory, self.job_id)
        if not now.held_by(self.attempt):
            self._lose(now)
        elif now.cancel_requested:
            self.cancel.set()

    def _lose(self, now: lifecycle.Holder | None = None) -> None:
        now = now or lifecycle.holder(self.factory, self.job_id)
        if not now.held_by(self.attempt):
            log.warning("job %s: attempt %d lost its claim (now %s)", self.job_id, self.attempt, now)
            self.lost.set()

    def _flush(self) -> None:
        """The last streamed rows, before the run's terminal write."""
        try:
            rows = self._take_rows()
            if rows and not self._write(None, rows):
                self._lose()
        except Exception:
            log.exception("job %s: could not write the last streamed metric rows", self.job_id)
