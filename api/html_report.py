"""``GET /v1/jobs/{id}/report.html``: a SUCCEEDED job's report as one self-contained, printable HTML
page (``glorot_core.report_html``; docs/figures.md, "HTML report"); ``GET /v1/suites/{id}/report.html``:
a multi-seed suite's report the same way.

The page is fetched with the API key, but a browser would not send that key for images the page points
to; so the figures are embedded as ``data:`` URIs, drawn through the figure routes' per-process cache
(``api.figures.drawn``). Reading the report, drawing and templating run in the thread pool, never on
the event loop. The answer carries the page's Content Security Policy as a header too: no script, no
fetch, only the page's own style and images.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from api import services, suite_service
from api.deps import AppContext, CtxDep, PrincipalDep
from api.figures import drawn
from api.problems import PROBLEM_JSON
from api.query_params import reject_repeated_scalars
from glorot_core import report_html

html_router = APIRouter(prefix="/v1", dependencies=[Depends(reject_repeated_scalars)])

HEADERS = {
    "Content-Security-Policy": report_html.CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-cache",
}
"""Sent with every page: the page's own policy (it is also in its ``<meta>``) and no framing."""

_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
FigureFormat = Literal["svg", "png"]
FiguresQuery = Annotated[FigureFormat, Query(description="how the figures are embedded: svg (vector, prints sharp) "
                                                         "or png")]


def _responses(subject: str, *, unfinished: bool) -> dict[int | str, dict[str, Any]]:
    """The page routes' documented answers; ``unfinished``: a 409 while the subject has not SUCCEEDED."""
    out: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/html": {}}},
        401: {"description": "missing or unknown API key", **_PROBLEM},
        404: {"description": f"no such {subject} for this tenant", **_PROBLEM},
        422: {"description": "invalid query parameters, with field paths", **_PROBLEM},
        429: {"description": "over the tenant's request rate (Retry-After)", **_PROBLEM},
    }
    if unfinished:
        out[409] = {"description": "not SUCCEEDED (yet)", **_PROBLEM}
    return out


def job_meta(job: Any) -> dict[str, Any]:
    """The job's facts that head the page."""
    return {"id": job.id, "kind": job.kind, "state": getattr(job.state, "value", job.state),
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


def _page(ctx: AppContext, tenant_id: int, job_id: str, fmt: str) -> str:
    with ctx.factory() as session:
        job, report = services.get_job_report(session, tenant_id, job_id)  # 404 another tenant's, 409 unfinished
        meta = job_meta(job)
    return report_html.render_report(report, fmt=fmt, job=meta,
                                     draw=lambda name, f: drawn(job_id, report, name, f))


@html_router.get(
    "/jobs/{job_id}/report.html", response_class=HTMLResponse,
    summary="The job's report as a self-contained HTML page",
    description="Figures (embedded, `figures=svg` or `png`), per-layer tables at initialisation and at the end, the "
    "verdicts with their numbers, the linear theory beside the measurements, the spec. Readable without "
    "JavaScript (the page has none), printable, and the same page offline (`glorot report ID --html FILE`). "
    "409 problem while the job is not SUCCEEDED.",
    responses=_responses("job", unfinished=True),
)
async def read_report_html(
    job_id: str, ctx: CtxDep, principal: PrincipalDep,
    figures: FiguresQuery = "svg",
) -> HTMLResponse:
    page = await run_in_threadpool(_page, ctx, principal.tenant_id, job_id, figures)
    return HTMLResponse(page, headers=HEADERS)


def _suite_page(ctx: AppContext, tenant_id: int, suite_id: str, fmt: str) -> str:
    """The suite's page from the suite service, as the JSON routes answer: the same tenant check, report
    and (cached) figures."""
    report, bands = suite_service.report_and_bands(ctx, tenant_id, suite_id)
    embedded: list[report_html.EmbeddedFigure] = []
    if bands.bands:  # none while no child has SUCCEEDED (the figure routes answer 409): a page without figures
        embedded = [report_html.embed(f["name"], f["paper"], f["title"], suite_service.draw(bands, f["name"], fmt),
                                      fmt) for f in suite_service.figure_entries(suite_id)]
    return report_html.render_suite_report(report, figures=embedded)


@html_router.get(
    "/suites/{suite_id}/report.html", response_class=HTMLResponse,
    summary="A suite's report as a self-contained HTML page",
    description="Test error per configuration across seeds (mean, std, Student-t interval) beside the paper's "
    "Table 1 value, the runs, every statistic's per-seed values and summary, and the suite's figures "
    "(embedded, `figures=svg` or `png`). Answered in every state, as the suite's JSON report: while runs are "
    "going on the page says it is not complete and covers the runs that SUCCEEDED so far.",
    responses=_responses("suite", unfinished=False),
)
async def read_suite_report_html(
    suite_id: str, ctx: CtxDep, principal: PrincipalDep,
    figures: FiguresQuery = "svg",
) -> HTMLResponse:
    page = await run_in_threadpool(_suite_page, ctx, principal.tenant_id, suite_id, figures)
    return HTMLResponse(page, headers=HEADERS)

