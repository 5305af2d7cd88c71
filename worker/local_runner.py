"""The embedded mode's runner: started by ``glorot serve`` when no broker is configured.

A supervisor thread in the server process claims QUEUED rows from the same job table the Celery
workers use (``jobs.lifecycle.claim``: the same conditional UPDATE) and runs each claimed job with
the same code (``worker.execute.run_claimed``). It also runs the heartbeat reaper.

Isolation (``GLOROT_LOCAL_RUNNER_ISOLATION``):

* ``process`` (default): each job runs in a process of its own, forked by the runner's **fork server**
  (``worker.forkserver``): a process spawned once, which imported torch and glorot_core (never CUDA)
  so that a job's process starts in milliseconds instead of importing them again. The API process
  itself forks nothing and stays torch-free. A job that crashes, leaks, or segfaults cannot take the
  API down; the supervisor hears of the child's exit at once and fails the job with the exit status
  (fenced: a child that already wrote its terminal state is left alone). The hard time limit and a
  cancel that the job ignores for ``cancel_grace_s`` are enforced by killing the child. If the fork
  server itself dies, its jobs die with it and are re-queued (while attempts are left); the next job
  starts a new fork server.
* ``thread``: the job runs in a thread of the server (no spawn cost; for tests and debugging). A
  crash of the interpreter would take the API with it, and the hard limit cannot be enforced.

The claim happens in the supervisor, so a job shows RUNNING as soon as a slot is free (before the
child has imported torch); the child writes heartbeats from then on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import fairness, lifecycle
from jobs.db import session_factory
from jobs.models import Job, utcnow
from jobs.settings import Settings
from worker.execute import default_worker_id, run_claimed
from worker.forkserver import JOB_MODULES, ForkServer, ForkServerLost
from worker.limits import apply_job_limits

log = logging.getLogger("glorot.local_runner")


def _child_main(settings: Settings, job_id: str, attempt: int) -> None:
    """Entry point of a job process (forked by the fork server, with the job modules loaded)."""
    apply_job_limits(settings)
    run_claimed(session_factory(settings.resolved_database_url), job_id, attempt, settings)


@dataclass
class _Slot:
    job_id: str
    attempt: int
    started: float
    proc: Any = None  # worker.forkserver.JobProcess (process isolation)
    thread: threading.Thread | None = None
    killed_for: str | None = None

    def alive(self) -> bool:
        return self.proc.is_alive() if self.proc is not None else bool(self.thread and self.thread.is_alive())


class LocalRunner:
    """Claims and runs QUEUED jobs, ``local_runner_concurrency`` at a time, plus the reaper."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session] | None = None) -> None:
        self.settings = settings
        self.factory = factory or session_factory(settings.resolved_database_url)
        self.worker_id = f"local:{default_worker_id()}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots: dict[str, _Slot] = {}
        # The fork server also loads this module: _child_main reaches it by name.
        self._forkserver = ForkServer(notify=self.wake, modules=(*JOB_MODULES, __name__))
        self._last_reap = 0.0

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.settings.local_runner_isolation == "process":
            self._forkserver.start()  # imports torch in the background, ready by the first job
        self._thread = threading.Thread(target=self._loop, name="glorot-local-runner", daemon=True)
        self._thread.start()
        log.info("local runner started (%s isolation, %d slot(s))", self.settings.local_runner_isolation,
                 self.settings.local_runner_concurrency)

    def wake(self) -> None:
        """A job was committed: look now instead of at the next poll."""
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> list[str]:
        """Ids of the jobs running now."""
        return list(self._slots)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; kill job processes and re-queue their jobs (another start runs them again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for slot in list(self._slots.values()):
            if slot.proc is not None and slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(5)
                if lifecycle.requeue(self.factory, slot.job_id, slot.attempt, "the server stopped while the job ran"):
                    log.warning("job %s: re-queued (server stopping)", slot.job_id)
        self._forkserver.stop()

    # ------------------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._supervise()
                self._maybe_reap()
                self._fill_slots()
            except Exception:  # the database is away: retry at the next tick
                log.exception("local runner: tick failed")
            busy = bool(self._slots)
            self._wake.wait(0.2 if busy else self.settings.local_poll_interval_s)
            self._wake.clear()

    def _maybe_reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap >= self.settings.reaper_interval_s:
            self._last_reap = now
            if lifecycle.reap(self.factory, self.settings):
                self._wake.set()

    def _fill_slots(self) -> None:
        free = self.settings.local_runner_concurrency - len(self._slots)
        if free <= 0:
            return
        if self.settings.local_runner_isolation == "process" and not self._forkserver.ready():
            # Claim nothing until a job's process can start at once: a claimed job waiting for the fork
            # server to import torch would write no heartbeat. Its ready report wakes this loop.
            self._forkserver.start()
            return
        for job_id in fairness.fair_queued(self.factory, limit=free * 2):  # round robin over tenants
            if len(self._slots) >= self.settings.local_runner_concurrency or self._stop.is_set():
                return
            attempt = lifecycle.claim(self.factory, job_id, self.worker_id)
            if attempt is None:
                continue  # cancelled or claimed by someone else meanwhile
            self._launch(job_id, attempt)

    def _launch(self, job_id: str, attempt: int) -> None:
        slot = _Slot(job_id, attempt, time.monotonic())
        if self.settings.local_runner_isolation == "process":
            try:
                slot.proc = self._forkserver.fork(_child_main, (self.settings, job_id, attempt))
            except ForkServerLost as e:
                self._retry_or_fail(job_id, attempt, f"could not start the job's process: {e}")
                return
        else:
            slot.thread = threading.Thread(target=self._run_in_thread, args=(job_id, attempt),
                                           name=f"glorot-job-{job_id[:8]}", daemon=True)
            slot.thread.start()
        self._slots[job_id] = slot
        log.info("job %s: attempt %d started (%s)", job_id, attempt, self.settings.local_runner_isolation)

    def _run_in_thread(self, job_id: str, attempt: int) -> None:
        try:
            run_claimed(self.factory, job_id, attempt, self.settings)
        except Exception as e:  # run_claimed stores failures itself; this is the last line of defence
            log.exception("job %s: runner thread crashed", job_id)
            lifecycle.fail(self.factory, job_id, attempt, f"runner thread crashed: {type(e).__name__}: {e}")
        finally:
            self._wake.set()

    def _supervise(self) -> None:
        for job_id, slot in list(self._slots.items()):
            if not slot.alive():
                if slot.proc is not None:
                    slot.proc.join(1)
                self._settle_dead(slot)
                del self._slots[job_id]
                continue
            if slot.proc is None:
                continue
            elapsed = time.monotonic() - slot.started
            if elapsed > self.settings.job_hard_time_limit_s:
                self._kill(slot, f"hard time limit of {self.settings.job_hard_time_limit_s:g} s exceeded")
                continue
            with self.factory() as s:
                row = s.execute(select(Job.cancel_requested, Job.cancel_requested_at).where(Job.id == job_id)).one()
            if row.cancel_requested and row.cancel_requested_at is not None:
                waited = (utcnow() - row.cancel_requested_at).total_seconds()
                if waited > self.settings.cancel_grace_s:
                    self._kill(slot, "cancelled")

    def _kill(self, slot: _Slot, reason: str) -> None:
        log.warning("job %s: killing its process (%s)", slot.job_id, reason)
        slot.killed_for = reason
        slot.proc.kill()
        slot.proc.join(5)

    def _settle_dead(self, slot: _Slot) -> None:
        """The job's process/thread is gone: make sure the row does not stay RUNNING (fenced writes)."""
        if not lifecycle.holder(self.factory, slot.job_id).held_by(slot.attempt):
            return  # the job wrote its own terminal state (or lost its claim): nothing to do
        if slot.killed_for == "cancelled":
            lifecycle.stop_cancelled(self.factory, slot.job_id, slot.attempt,
                                     error=f"the job ignored the cancel for {self.settings.cancel_grace_s:g} s and "
                                     "was killed")
            return
        reason = slot.killed_for
        if reason is None:
            how = slot.proc.exit_reason if slot.proc is not None else "ended"
            reason = f"the job process {how} without finishing the job"
            if slot.proc is not None and slot.proc.server_lost:
                self._retry_or_fail(slot.job_id, slot.attempt, reason)
                return
        lifecycle.fail(self.factory, slot.job_id, slot.attempt, reason)

    def _retry_or_fail(self, job_id: str, attempt: int, reason: str) -> None:
        """The fork server failed the job (not the job's own doing): QUEUED again while attempts are
        left (the next claim is a new attempt), else FAILED with ``reason``."""
        log.error("job %s: %s", job_id, reason)
        if attempt < self.settings.max_attempts:
            if lifecycle.requeue(self.factory, job_id, attempt, reason):
                log.warning("job %s: re-queued", job_id)
            return
        lifecycle.fail(self.factory, job_id, attempt, reason)
