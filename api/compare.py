"""Comparing jobs: ``GET /v1/compare?jobs=A,B,…`` (per-layer statistics side by side at one snapshot, with
differences and bin-by-bin histograms: ``glorot_core.compare``) and its overlay figures
``GET /v1/compare/figures/{name}.png|svg?jobs=A,B`` (``glorot_core.figures.overlay``).

Every job must be the caller's tenant's (404 otherwise, the same as an unknown id) and SUCCEEDED (409
naming the job). Only the parts of each stored report a comparison needs are read: ``spec``, ``layers``
and the one chosen snapshot (``jobs.reports``), never a whole report. Database reads and drawing run in
the thread pool; drawn overlays are cached per (jobs, snapshot, name, format) like a job's figures.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from api import report_parts, services
from api.deps import AppContext, CtxDep, PrincipalDep
from api.figures import FigureCache
from api.problems import PROBLEM_JSON, Problem
from api.query_params import reject_repeated_scalars
from glorot_core.compare import MAX_RUNS, Run, compare, parse_snapshot, snapshot_index
from glorot_core.figures import FORMATS, MEDIA_TYPES
from glorot_core.figures.overlay import OVERLAYS, render
from jobs import reports
from jobs.models import JobState

compare_router = APIRouter(prefix="/v1", dependencies=[Depends(reject_repeated_scalars)])

JOB_ID = r"[0-9a-fA-F-]{1,64}"
JOBS_PATTERN = rf"^{JOB_ID}(,{JOB_ID}){{1,{MAX_RUNS - 1}}}$"
"""2..MAX_RUNS comma-separated ids (that they are distinct is checked apart: ``jobs_repeated``)."""
SNAPSHOT_PATTERN = r"^(init|final|[0-9]{1,9})$"
CACHE = FigureCache(64)
"""Drawn overlays of this process (keyed by the job ids, the snapshot, the figure and the format)."""

_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key", **_PROBLEM},
    404: {"description": "a job that is not this tenant's (or no such figure)", **_PROBLEM},
    409: {"description": "a job that has not SUCCEEDED (named in `job_id`)", **_PROBLEM},
    422: {"description": "invalid `jobs` or `snapshot`, with the parameter named", **_PROBLEM},
    429: {"description": "over the tenant's request rate (Retry-After)", **_PROBLEM},
}

JobsQuery = Annotated[str, Query(max_length=MAX_RUNS * 65, pattern=JOBS_PATTERN,
                                 description=f"2 to {MAX_RUNS} job ids, comma-separated; the first is the "
                                 "baseline the differences are taken from")]
SnapshotQuery = Annotated[str, Query(pattern=SNAPSHOT_PATTERN, description="init (the first snapshot), final "
                                     "(the last) or a 0-based snapshot index")]


def _invalid(name: str, message: str, code: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": code}])


def parse_jobs(text: str) -> list[str]:
    """The job ids of ``jobs=A,B,…``: 2..MAX_RUNS distinct ones, else 422 naming ``jobs``."""
    ids = text.split(",")
    if not 2 <= len(ids) <= MAX_RUNS:
        raise _invalid("jobs", f"a comparison takes 2 to {MAX_RUNS} job ids, not {len(ids)}", "jobs_count")
    if len(set(ids)) != len(ids):
        raise _invalid("jobs", "each job may appear once", "jobs_repeated")
    return ids


def _layout(ctx: AppContext, tenant_id: int, job_id: str) -> reports.Layout:
    """The job's stored report layout: 404 for another tenant's or an unknown job, 409 naming it while it
    has not SUCCEEDED."""
    with ctx.factory() as session:
        job = services.get_job(session, tenant_id, job_id)
        if job.state != JobState.SUCCEEDED:
            raise Problem(409, "report-not-ready", f"job {job_id} is {job.state}; it can be compared once it "
                          "SUCCEEDED", job_id=job_id, state=job.state)
        return services.report_layout(session, tenant_id, job_id)


def _read_run(ctx: AppContext, job_id: str, layout: reports.Layout, choice: str | int) -> Run:
    """``spec``, ``layers`` and the chosen snapshot of the job's report (422 naming ``snapshot`` when the
    report has no such snapshot)."""
    try:
        index = snapshot_index(choice, layout.snapshots or 0)
    except IndexError as e:
        raise _invalid("snapshot", f"job {job_id}: {e}", "snapshot_range") from None
    sections = ",".join(s for s in ("spec", "layers") if s in layout.sections) or None
    selection = report_parts.select(layout, snapshots=f"{index}:{index + 1}", sections=sections)
    part = json.loads(b"".join(report_parts.render(ctx.engine.connect, job_id, layout, selection)))
    return Run(label=job_id, spec=part.get("spec", {}), layers=part.get("layers", []),
               snapshot=part["snapshots"][0], snapshot_index=index)


def _checked(ctx: AppContext, tenant_id: int, jobs: str, snapshot: str) -> tuple[list[tuple[str, reports.Layout]],
                                                                                str | int]:
    """Each asked job with its report's layout, after every check of the parameters, tenant and state."""
    ids = parse_jobs(jobs)
    choice = parse_snapshot(snapshot)
    return [(job_id, _layout(ctx, tenant_id, job_id)) for job_id in ids], choice


def load_runs(ctx: AppContext, tenant_id: int, jobs: str, snapshot: str) -> tuple[list[Run], str | int]:
    """The runs of a comparison, in the order asked, each at the chosen snapshot (problems as documented)."""
    layouts, choice = _checked(ctx, tenant_id, jobs, snapshot)
    return [_read_run(ctx, job_id, layout, choice) for job_id, layout in layouts], choice


def _comparison(ctx: AppContext, tenant_id: int, jobs: str, snapshot: str) -> dict[str, Any]:
    runs, choice = load_runs(ctx, tenant_id, jobs, snapshot)
    body = compare(runs, choice)
    body["figures"] = _figure_links(jobs, snapshot)
    return body


def _figure_links(jobs: str, snapshot: str) -> list[dict[str, str]]:
    return [{**d.describe(), **{fmt: f"/v1/compare/figures/{d.name}.{fmt}?jobs={jobs}&snapshot={snapshot}"
                                for fmt in FORMATS}} for d in OVERLAYS.values()]


def _draw(ctx: AppContext, tenant_id: int, jobs: str, snapshot: str, name: str, fmt: str) -> bytes:
    if name not in OVERLAYS:
        raise Problem(404, "not-found", f"no comparison figure {name!r}; there are: {', '.join(OVERLAYS)}")
    layouts, choice = _checked(ctx, tenant_id, jobs, snapshot)  # every time, cached or not
    key = (f"{jobs}|{snapshot}", name, fmt)
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    data = render(name, [_read_run(ctx, job_id, layout, choice) for job_id, layout in layouts], fmt)
    CACHE.put(key, data)
    return data


@compare_router.get(
    "/compare", summary="Compare jobs layer by layer at one snapshot", responses=ERRORS,
    description="Per-layer statistics of each job (activation mean, std, p98, saturation, back-propagated and "
    "weight gradient std, Jacobian mean singular value) at the chosen snapshot, each job's difference from the "
    "first, and each layer's histograms as fractions per bin with bin-by-bin differences when every job has the "
    "same edges (`same_bins`; otherwise each job's own edges and no differences). Lists the overlay figures.",
)
async def read_comparison(ctx: CtxDep, principal: PrincipalDep, jobs: JobsQuery,
                          snapshot: SnapshotQuery = "init") -> dict[str, Any]:
    return await run_in_threadpool(_comparison, ctx, principal.tenant_id, jobs, snapshot)


@compare_router.get(
    "/compare/figures/{name}.{fmt}", summary="An overlay figure of several jobs, PNG or SVG",
    response_class=Response, responses={**ERRORS, 200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
    description="`activation_histograms` (Fig 6), `backprop_grad_histograms` (Fig 7), `weight_grad_histograms` "
    "(Fig 8): per-layer histograms, one colour per layer, one line style per job; `layer_profile`: activation "
    "and back-propagated gradient std per layer, one line per job.",
)
async def read_comparison_figure(ctx: CtxDep, principal: PrincipalDep, jobs: JobsQuery,
                                 name: str = Path(pattern=r"^[a-z0-9_]{1,64}$"),
                                 fmt: str = Path(pattern=r"^(png|svg)$"),
                                 snapshot: SnapshotQuery = "init") -> Response:
    data = await run_in_threadpool(_draw, ctx, principal.tenant_id, jobs, snapshot, name, fmt)
    return Response(data, media_type=MEDIA_TYPES[fmt], headers={"Cache-Control": "private, max-age=86400"})
