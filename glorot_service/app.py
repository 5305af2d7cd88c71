"""``build_app``: the API app composed with its job runner (what ``glorot serve`` serves).

* broker configured (``GLOROT_BROKER_URL``) → ``worker.dispatch.CeleryDispatcher``: each committed job
  is one message; Celery workers (``glorot worker``) run it;
* otherwise → ``api.dispatch.LocalDispatcher`` with a ``worker.local_runner.LocalRunner`` started and
  stopped with the app (unless ``start_runner`` is False or ``GLOROT_LOCAL_RUNNER=0``: jobs then stay
  QUEUED for a runner elsewhere).

Usable as a uvicorn factory: ``uvicorn --factory glorot_service.app:build_app``.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from api.dispatch import Dispatcher, LocalDispatcher
from jobs.settings import Settings, get_settings
from worker.dispatch import CeleryDispatcher
from worker.local_runner import LocalRunner


def make_dispatcher(settings: Settings, *, start_runner: bool | None = None) -> Dispatcher:
    """The dispatcher for ``settings``. ``start_runner``: run the local runner in this process
    (default: when there is no broker and ``settings.local_runner``)."""
    if settings.broker_url:
        return CeleryDispatcher(settings)
    run_local = settings.local_runner if start_runner is None else start_runner
    return LocalDispatcher(LocalRunner(settings) if run_local else None)


def build_app(settings: Settings | None = None, *, start_runner: bool | None = None) -> FastAPI:
    """The API app for ``settings`` with the dispatcher (and runner) of :func:`make_dispatcher`."""
    settings = settings or get_settings()
    return create_app(settings, dispatcher=make_dispatcher(settings, start_runner=start_runner))
