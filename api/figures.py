"""Figures of a job's report: ``GET /v1/jobs/{id}/figures`` lists them, ``GET
/v1/jobs/{id}/figures/{name}.png`` (or ``.svg``) draws one (``glorot_core.figures``).

A report never changes once its job SUCCEEDED, so the drawn bytes are cached per (job, name, format) in
a bounded LRU of this process. Every request still checks, in the database, that the job belongs to
the caller's tenant and SUCCEEDED before the cache is consulted. The database reads and the drawing
(hundreds of milliseconds) run in the thread pool, never on the event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api import services
from api.deps import AppContext, CtxDep, PrincipalDep
from api.problems import PROBLEM_JSON, Problem
from glorot_core import figures
from jobs.models import JobState

figures_router = APIRouter(prefix="/v1")

CACHE_ENTRIES = 256
"""Drawn figures kept per process (a PNG is ≈50–100 KB, an SVG a few hundred: ≈50 MB at most)."""
_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


class FigureCache:
    """A thread-safe LRU of drawn figures keyed by (job id, figure name, format)."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._data: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str, str], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.entries:
                self._data.popitem(last=False)


CACHE = FigureCache()


def _succeeded_report(ctx: AppContext, tenant_id: int, job_id: str) -> dict[str, Any]:
    with ctx.factory() as session:
        return services.get_report(session, tenant_id, job_id)  # 404 other tenant's / unknown, 409 not SUCCEEDED


def _check_succeeded(ctx: AppContext, tenant_id: int, job_id: str) -> None:
    with ctx.factory() as session:
        job = services.get_job(session, tenant_id, job_id)
        if job.state != JobState.SUCCEEDED:
            raise Problem(409, "report-not-ready", f"job {job_id} is {job.state}; figures exist only once it "
                          "SUCCEEDED", state=job.state)


def _listing(ctx: AppContext, tenant_id: int, job_id: str) -> dict[str, Any]:
    report = _succeeded_report(ctx, tenant_id, job_id)
    return {"job_id": job_id, "figures": [
        {**d.describe(), **{fmt: f"/v1/jobs/{job_id}/figures/{d.name}.{fmt}" for fmt in figures.FORMATS}}
        for d in figures.available(report)]}


def drawn(job_id: str, report: dict[str, Any], name: str, fmt: str) -> bytes:
    """Figure ``name`` of a SUCCEEDED job's ``report`` (the caller checked tenant and state), from the
    cache or drawn and cached. Blocking: call it from the thread pool."""
    key = (job_id, name, fmt)
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    data = figures.render(report, name, fmt)
    CACHE.put(key, data)
    return data


def _draw(ctx: AppContext, tenant_id: int, job_id: str, name: str, fmt: str) -> bytes:
    _check_succeeded(ctx, tenant_id, job_id)
    cached = CACHE.get((job_id, name, fmt))
    if cached is not None:
        return cached
    report = _succeeded_report(ctx, tenant_id, job_id)
    d = figures.FIGURES.get(name)
    if d is None or not d.applies(report):
        names = ", ".join(x.name for x in figures.available(report))
        raise Problem(404, "not-found", f"job {job_id} has no figure {name!r}; it has: {names or 'none'}")
    return drawn(job_id, report, name, fmt)


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key", **_PROBLEM},
    422: {"description": "invalid path parameters, with field paths", **_PROBLEM},
    429: {"description": "over the tenant's request rate (Retry-After)", **_PROBLEM},
}

@figures_router.get("/jobs/{job_id}/figures", summary="The figures a job's report can be drawn as",
                    description="Name, the paper's figure it mirrors, title and the PNG and SVG addresses of each "
                    "figure. 409 while the job is not SUCCEEDED.",
                    responses={**_AUTH_ERRORS, 404: {"description": "no such job for this tenant", **_PROBLEM},
                               409: {"description": "not SUCCEEDED (yet)", **_PROBLEM}})
async def list_figures(job_id: str, ctx: CtxDep, principal: PrincipalDep) -> dict[str, Any]:
    return await run_in_threadpool(_listing, ctx, principal.tenant_id, job_id)


@figures_router.get(
    "/jobs/{job_id}/figures/{name}.{fmt}", summary="One figure of a job's report, PNG or SVG",
    response_class=Response,
    responses={**_AUTH_ERRORS, 200: {"content": {"image/png": {}, "image/svg+xml": {}}},
               404: {"description": "no such job for this tenant, or no such figure for its report", **_PROBLEM},
               409: {"description": "not SUCCEEDED (yet)", **_PROBLEM}},
)
async def read_figure(job_id: str, ctx: CtxDep, principal: PrincipalDep,
                      name: str = Path(pattern=r"^[a-z0-9_]{1,64}$"),
                      fmt: str = Path(pattern=r"^(png|svg)$")) -> Response:
    data = await run_in_threadpool(_draw, ctx, principal.tenant_id, job_id, name, fmt)
    return Response(data, media_type=figures.MEDIA_TYPES[fmt],
                    headers={"Cache-Control": "private, max-age=86400"})
