"""The v1 routes (the REST contract: docs/service.md) and the operational ones (/healthz, /readyz, /metrics)."""

from __future__ import annotations

import itertools
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from sqlalchemy import bindparam, select, text

from api import report_parts, services
from api.deps import AppContext, CtxDep, PrincipalDep, SessionDep
from api.jobcache import CachedJob, make_entry
from api.problems import PROBLEM_JSON, Problem
from api.query_params import PageCursor, PageLimit, page_size, reject_repeated_scalars
from api.report_parts import SECTIONS_PATTERN, SNAPSHOT_RANGE_PATTERN
from api.schemas import Health, JobOut, JobPage, MetricSeriesOut, MetricsPage
from api.submission import SubmissionDep
from glorot_core.spec import MAX_WIDTH
from jobs.lifecycle import Submission
from jobs.models import Job, JobState
from jobs.reports import coalesce

MAX_LAYER_INDEX = MAX_WIDTH  # more than any network has layers; bounds the SQL integer

router = APIRouter(prefix="/v1", dependencies=[Depends(reject_repeated_scalars)])
ops = APIRouter()

STATISTIC_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
STATISTIC_RE = re.compile(STATISTIC_PATTERN)

_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key", **_PROBLEM},
    404: {"description": "no such job for this tenant", **_PROBLEM},
    422: {"description": "invalid request, with field paths", **_PROBLEM},
    429: {"description": "over the tenant's request rate or active-job cap (Retry-After)", **_PROBLEM},
}
BAD_CURSOR = {"description": "the cursor is not a next_cursor of this list with these filters", **_PROBLEM}


@router.post(
    "/experiments",
    status_code=202,
    response_model=JobOut,
    summary="Submit an experiment",
    description="Validates the ExperimentSpec (422 with field paths when invalid), stores a QUEUED job and "
    "dispatches it. 202 with `Location: /v1/jobs/{id}`. With `Idempotency-Key`, the same key and body "
    "return the original job (header `Idempotent-Replayed: true`); the same key with another body is 422.",
    responses={**COMMON_ERRORS, 413: {"description": "body too large", **_PROBLEM},
               415: {"description": "not JSON", **_PROBLEM}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ExperimentSpec"}}}}},
)
async def submit_experiment(ctx: CtxDep, principal: PrincipalDep, sub: SubmissionDep) -> Response:
    def create() -> Submission:
        with ctx.factory() as session:
            return services.submit_job(
                session, tenant_id=principal.tenant_id, kind="experiment", spec=sub.body,
                resolved=sub.spec.model_dump(mode="json"), total_steps=sub.spec.train.steps,
                idempotency_key=sub.idempotency_key, body_hash=sub.body_hash,
            )

    stored = await run_in_threadpool(create)
    if stored.created:
        await run_in_threadpool(ctx.dispatcher.dispatch, stored.job.id)
    headers = {"Location": f"/v1/jobs/{stored.job.id}"}
    if not stored.created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(JobOut.of(stored.job).model_dump(mode="json"), status_code=202, headers=headers)


JOB_COLUMNS = (Job.id, Job.kind, Job.state, Job.attempt, Job.progress, Job.error, Job.cancel_requested,
               Job.idempotency_key, Job.created_at, Job.started_at, Job.finished_at, Job.heartbeat_at, Job.spec,
               Job.resolved_spec)
_READ_JOB = select(*JOB_COLUMNS).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


def _load_job_response(ctx: AppContext, tenant_id: int, job_id: str) -> CachedJob:
    """One indexed SELECT of the response's columns (primary key + tenant), serialised once."""
    with ctx.engine.connect() as conn:
        row = conn.execute(_READ_JOB, {"job_id": job_id, "tenant_id": tenant_id}).one_or_none()
    if row is None:
        raise Problem(404, "job-not-found", f"no job {job_id!r}")
    # the same bytes FastAPI's JSONResponse would render for the response model
    body = json.dumps(JobOut.of(row).model_dump(mode="json"), ensure_ascii=False, allow_nan=False,  # type: ignore[arg-type]
                      separators=(",", ":"))
    return make_entry(body.encode())


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against any listed tag, or ``*``."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@router.get(
    "/jobs/{job_id}", response_model=JobOut, responses={**COMMON_ERRORS, 304: {"description": "not modified"}},
    summary="Read a job",
    description="The job's state and progress, for polling. Responses are cached in the serving process for "
    "`GLOROT_JOB_CACHE_TTL_S` (default 0.25 s) per tenant and job: a change made by a worker is visible within "
    "that bound (progress is written about once a second anyway); a cancel through this API is visible at "
    "once. Sends an `ETag`; with a matching `If-None-Match` the answer is 304 without a body.",
)
async def read_job(job_id: str, request: Request, principal: PrincipalDep) -> Response:
    services.check_job_id(job_id)
    ctx: AppContext = request.app.state.ctx
    tenant_id = principal.tenant_id
    entry = await ctx.job_cache.get(
        tenant_id, job_id, lambda: run_in_threadpool(_load_job_response, ctx, tenant_id, job_id))
    headers = {"ETag": entry.etag, "Cache-Control": "private, no-cache"}
    inm = request.headers.get("if-none-match")
    if inm is not None and _etag_matches(inm, entry.etag):
        return Response(status_code=304, headers=headers)
    return Response(entry.body, media_type="application/json", headers=headers)


@router.get("/jobs", response_model=JobPage, responses={**COMMON_ERRORS, 400: BAD_CURSOR},
            summary="List jobs (newest first)")
def list_jobs(
    session: SessionDep,
    ctx: CtxDep,
    principal: PrincipalDep,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
    kind: Annotated[str | None, Query(max_length=32, pattern=r"^[\w.-]+$", description="only this kind")] = None,
    limit: PageLimit = None,
    cursor: PageCursor = None,
) -> JobPage:
    jobs, nxt = services.list_jobs(session, tenant_id=principal.tenant_id, secret=ctx.secret, state=state,
                                   kind=kind, limit=page_size(ctx.settings, limit), cursor=cursor)
    return JobPage(items=[JobOut.of(j) for j in jobs], next_cursor=nxt)


@router.post(
    "/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, summary="Cancel a job (cooperative)",
    description="A QUEUED job becomes CANCELLED at once; a RUNNING one gets `cancel_requested` and stops at "
    "its runner's next check (about a second). 409 if the job is already terminal.",
    responses={**COMMON_ERRORS, 409: {"description": "already terminal", **_PROBLEM}},
)
async def cancel_job(job_id: str, ctx: CtxDep, principal: PrincipalDep) -> JSONResponse:
    def cancel() -> dict[str, Any]:
        with ctx.factory() as session:
            return JobOut.of(services.cancel_job(session, principal.tenant_id, job_id)).model_dump(mode="json")

    try:
        body = await run_in_threadpool(cancel)
    finally:  # this process wrote (or tried to): its next poll of the job must not be served from the cache
        ctx.job_cache.invalidate(principal.tenant_id, job_id)
    return JSONResponse(body, status_code=202)


@router.get(
    "/jobs/{job_id}/report", summary="The job's JSON report",
    description="The diagnosis report (schema_version 1). 409 problem while the job is not SUCCEEDED. "
    "`snapshots=FROM:TO` and `sections=a,b` select a part (then `snapshot_range` gives from, to and total); "
    "gzip-compressed for clients that send `Accept-Encoding: gzip`. Streamed from the database as stored "
    "(compact JSON), so large reports cost the server no more memory than small ones. Sends an `ETag` (a "
    "report never changes); with a matching `If-None-Match` the answer is 304 without a body.",
    responses={**COMMON_ERRORS, 200: {"content": {"application/json": {"schema": {"type": "object"}}}},
               304: {"description": "not modified"}, 409: {"description": "not SUCCEEDED (yet)", **_PROBLEM}},
)
def read_report(
    job_id: str, request: Request, ctx: CtxDep, principal: PrincipalDep,
    snapshots: Annotated[str | None, Query(pattern=SNAPSHOT_RANGE_PATTERN, max_length=19,
                                           description="FROM:TO, snapshots FROM (included) to TO (excluded)")] = None,
    sections: Annotated[str | None, Query(pattern=SECTIONS_PATTERN, max_length=1055,
                                          description="comma-separated top-level sections: verdicts,layers")] = None,
) -> Response:
    with ctx.factory() as session:  # one small row; the connection goes back before any byte is streamed
        layout = services.report_layout(session, principal.tenant_id, job_id)
    selection = report_parts.select(layout, snapshots=snapshots, sections=sections)
    tag = report_parts.etag(layout, selection, (snapshots, sections))
    headers = {"ETag": "W/" + tag, "Cache-Control": "private, no-cache"}  # weak: gzip and identity share it
    inm = request.headers.get("if-none-match")
    if inm is not None and _etag_matches(inm, tag):
        return Response(status_code=304, headers=headers)
    chunks = coalesce(report_parts.render(ctx.engine.connect, job_id, layout, selection))
    first = next(chunks, b"")
    second = next(chunks, None)
    if second is None:  # small: one body (the gzip middleware then sends its Content-Length too)
        return Response(first, media_type="application/json", headers=headers)
    if selection.whole:
        headers["Content-Length"] = str(layout.size)
    return StreamingResponse(itertools.chain((first, second), chunks), media_type="application/json",
                             headers=headers)


@router.get(
    "/jobs/{job_id}/metrics", response_model=MetricsPage, responses={**COMMON_ERRORS, 400: BAD_CURSOR},
    summary="Metric time series of a job",
    description="Series per (layer, statistic) as [step, value] points, in every state: they grow while the job "
    "runs (a point per snapshot, about a second after it is taken) and are exactly the report's once it SUCCEEDED. "
    "Filter with repeated `layer` and `statistic`; at most `limit` points per page (capped), `next_cursor` for more.",
)
def read_metrics(
    job_id: str,
    session: SessionDep,
    ctx: CtxDep,
    principal: PrincipalDep,
    layer: Annotated[
        list[Annotated[int, Field(ge=0, le=MAX_LAYER_INDEX)]] | None,
        Query(max_length=256, description="layer index; 0 = whole network"),
    ] = None,
    statistic: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64, pattern=STATISTIC_PATTERN)]] | None,
        Query(max_length=256, description="e.g. activation.std, test_error"),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, description="points per page (capped by the server)")] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> MetricsPage:
    size = min(limit or ctx.settings.metric_points_default, ctx.settings.metric_points_max)
    for i, stat in enumerate(statistic or ()):
        if not STATISTIC_RE.match(stat):
            raise Problem(422, "validation-error", f"invalid statistic name {stat[:80]!r}", title="Invalid request",
                          errors=[{"loc": ["query", "statistic", i], "field": f"statistic.{i}",
                                   "message": "letters, digits, '.', '_', '-' (≤ 64)", "code": "string_pattern"}])
    job, series, n, nxt = services.metric_series(
        session, tenant_id=principal.tenant_id, job_id=job_id, secret=ctx.secret, layers=layer,
        statistics=statistic, limit=size, cursor=cursor,
    )
    return MetricsPage(job_id=job.id, state=JobState(job.state), series=[MetricSeriesOut(**s) for s in series],
                       points=n, next_cursor=nxt)


# -------------------------------------------------------------------------------------- operations


@ops.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@ops.get("/readyz", response_model=Health, summary="Readiness: database and broker (or local runner) reachable",
         responses={503: {"description": "not ready", **_PROBLEM}})
def readyz(ctx: CtxDep) -> Response:
    checks: dict[str, str] = {}
    failed = False
    try:
        with ctx.factory() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:
        checks["database"], failed = f"error: {type(e).__name__}: {e}"[:300], True
    name = "broker" if ctx.dispatcher.name == "celery" else "local_runner"
    try:
        ctx.dispatcher.check()
        checks[name] = "ok"
    except Exception as e:
        checks[name], failed = f"error: {type(e).__name__}: {e}"[:300], True
    if failed:
        return JSONResponse(
            {"type": "urn:glorot:problem:not-ready", "title": "Service Unavailable", "status": 503,
             "detail": "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"), "checks": checks},
            status_code=503, media_type=PROBLEM_JSON,
        )
    return JSONResponse(Health(status="ok", checks=checks).model_dump())


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response,
         responses={200: {"content": {"text/plain": {}}}})
def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
