"""Dispatch: how a committed job reaches something that runs it, seen from the API.

The API knows only the :class:`Dispatcher` protocol; what implements it is chosen by whoever composes
the service (``glorot_service.app.build_app``, behind ``glorot serve``), so the API never imports the
worker. ``dispatch`` is called only *after* the job row's transaction committed: a runner must never
look for a row it cannot see yet.

* :class:`LocalDispatcher` (embedded mode, no broker): wakes a :class:`Runner` living in this process
  (the local runner), which also polls the table, so a lost wake-up only costs a poll interval. The
  dispatcher starts and stops the runner with the app's lifespan. Without a runner, jobs stay QUEUED.
* The Celery dispatcher (``worker.dispatch.CeleryDispatcher``, when ``GLOROT_BROKER_URL`` is set)
  publishes a message carrying only the job id.
"""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    """What the API needs from a way of running jobs."""

    name: str

    def start(self) -> None:
        """Called when the app starts (its lifespan)."""

    def stop(self) -> None:
        """Called when the app stops."""

    def dispatch(self, job_id: str) -> None:
        """Make ``job_id`` (committed, QUEUED) reach a runner; must not raise."""

    def check(self) -> None:
        """Raise if jobs cannot currently be dispatched (used by /readyz)."""


class Runner(Protocol):
    """A job runner living in the API's process (the embedded mode's local runner)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wake(self) -> None:
        """A job was committed: look now instead of at the next poll."""

    def is_alive(self) -> bool: ...


class LocalDispatcher:
    """Embedded mode: the runner claims QUEUED rows itself; dispatch only wakes it up."""

    name = "local"

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner

    def start(self) -> None:
        if self.runner is not None:
            self.runner.start()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()

    def dispatch(self, job_id: str) -> None:
        if self.runner is not None:
            self.runner.wake()

    def check(self) -> None:
        if self.runner is not None and not self.runner.is_alive():
            raise RuntimeError("the local runner is not running")
