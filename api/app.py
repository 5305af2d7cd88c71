"""The FastAPI application: ``create_app(settings, dispatcher=…)``.

The app is handed its :class:`~api.dispatch.Dispatcher` and starts and stops it with its lifespan; it
never imports the worker. ``glorot serve`` runs the composed app (``glorot_service.app.build_app``):
in the embedded mode (no broker) a local runner beside the API in the same server process, with a
broker the Celery dispatcher. OpenAPI docs: /docs (Swagger UI, served from this process, so it works offline) and
/openapi.json (ReDoc is off: it loads its script from a CDN).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from api import problems
from api.compare import compare_router
from api.deps import AppContext
from api.dispatch import Dispatcher, LocalDispatcher
from api.docs_ui import install_docs
from api.figures import figures_router
from api.html_report import html_router
from api.jobcache import JobCache
from api.middleware import (
    BodyLimitMiddleware,
    BodyTooLarge,
    CompressionMiddleware,
    PrometheusMiddleware,
    UnexpectedErrorMiddleware,
)
from api.presets import presets_router
from api.routes import ops, router
from api.suites import suites_router
from api.uploads import UPLOAD_PATHS, uploads_router
from jobs.data_roots import DATA_ROOT_NAME
from jobs.db import session_factory
from jobs.models import Job, JobState
from jobs.settings import Settings, get_settings

log = logging.getLogger("glorot.api")


class JobStateCollector:
    """``glorot_jobs{state=…}``: job counts per state, read from the database at scrape time."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("glorot_jobs", "jobs per state (all tenants)", labels=["state"])
        try:
            with self.ctx.factory() as s:
                counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        except Exception:
            log.exception("metrics: cannot count jobs")
            return
        for state in JobState:
            g.add_metric([state.value], counts.get(state, 0))
        yield g


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from glorot_core.spec import ExperimentSpec

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    spec_schema = ExperimentSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(spec_schema.pop("$defs", {}))
    # The service reads data only from named folders under its data directory (jobs.data_roots).
    components["DataSpec"]["properties"]["root"]["anyOf"][0]["pattern"] = DATA_ROOT_NAME.pattern
    # A local model file is for offline runs (glorot run); the service takes uploads only.
    model = spec_schema["properties"]["model"]
    model["oneOf"] = [m for m in model["oneOf"] if m.get("$ref") != "#/components/schemas/FileModelSpec"]
    components.pop("FileModelSpec", None)
    # PostgreSQL's JSONB cannot store NUL, so the service refuses it in every string (string_nul).
    spec_schema["properties"]["name"]["pattern"] = "^[^\\x00]*$"
    components["ExperimentSpec"] = spec_schema
    components["Problem"] = {
        "type": "object", "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string", "example": "urn:glorot:problem:validation-error"},
            "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "loc": {"type": "array", "items": {}}, "field": {"type": "string"}, "pointer": {"type": "string"},
                "message": {"type": "string"}, "code": {"type": "string"}}}},
        },
        "required": ["type", "title", "status", "detail"],
    }
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in schema.get("paths", {}).items():
        if path.startswith("/v1/"):
            for op in item.values():
                op["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    """The app for ``settings``, dispatching jobs with ``dispatcher`` (started and stopped with the app's
    lifespan). Without one, a :class:`LocalDispatcher` with no runner: jobs stay QUEUED until a runner
    elsewhere claims them."""
    settings = settings or get_settings()
    dispatcher = dispatcher if dispatcher is not None else LocalDispatcher()
    ctx = AppContext(settings=settings, factory=session_factory(settings.resolved_database_url),
                     dispatcher=dispatcher, secret=settings.secret_bytes(),
                     job_cache=JobCache(settings.job_cache_ttl_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher.start()
        try:
            yield
        finally:
            dispatcher.stop()

    app = FastAPI(
        title="glorot",
        version="1",
        description="Layer-by-layer signal and gradient flow diagnostics (Glorot & Bengio, 2010) as a service. "
        "Authenticate with `Authorization: Bearer <api key>` (create one with `glorot keys create --tenant NAME`). "
        "Errors are RFC 9457 `application/problem+json`.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from local assets (works offline)
        redoc_url=None,  # ReDoc's script comes only from a CDN: blank offline
    )
    app.state.ctx = ctx
    app.state.registry = registry = CollectorRegistry()
    registry.register(JobStateCollector(ctx))
    problems.install(app)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problems.problem_response(413, "payload-too-large", str(exc), instance=request.url.path,
                                         limit=exc.limit)

    app.include_router(router)
    app.include_router(ops)
    app.include_router(uploads_router)
    app.include_router(presets_router)
    app.include_router(figures_router)
    app.include_router(compare_router)
    app.include_router(suites_router)
    app.include_router(html_router)
    install_docs(app)
    app.add_middleware(CompressionMiddleware, minimum_size=4096, compresslevel=6)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, exempt=UPLOAD_PATHS)
    app.add_middleware(PrometheusMiddleware, registry=registry)
    app.add_middleware(UnexpectedErrorMiddleware)  # last added = outermost: it sees every exception
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
