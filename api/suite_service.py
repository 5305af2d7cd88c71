"""Service layer of multi-seed suites: what the suite routes (``api.suites``) and the suite's HTML page
(``api.html_report``) do with the database and the figure cache, free of HTTP details except the
problems they raise. Every query is scoped to the caller's tenant: another tenant's suite behaves
exactly like one that does not exist (404). The functions block (database, drawing): call them in the
thread pool. Persistence and aggregation are ``jobs.suites``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api import services
from api.deps import AppContext
from api.figures import CACHE
from api.problems import Problem
from glorot_core import figures
from glorot_core.figures.curves import ErrorCurve, error_bands
from jobs import suites
from jobs.models import JobState, Suite

SUITE_FIGURES = {"test_error": ("Figs 11, 12", "Test error against examples seen, mean over seeds and their band")}
"""The figures of a suite: name → (the paper's figure, title)."""


def check_suite_id(suite_id: str) -> None:
    """404 for a string that is not an id we could have issued: no need to ask the database."""
    if not services.JOB_ID_RE.match(suite_id):
        raise Problem(404, "suite-not-found", f"no suite {suite_id[:80]!r}")


def get_suite(session: Session, tenant_id: int, suite_id: str) -> Suite:
    """The tenant's suite ``suite_id``; 404 for an unknown id or another tenant's suite."""
    check_suite_id(suite_id)
    suite = suites.get(session, tenant_id, suite_id)
    if suite is None:
        raise Problem(404, "suite-not-found", f"no suite {suite_id!r}")
    return suite


def list_suites(ctx: AppContext, tenant_id: int, *, state: JobState | None, limit: int,
                cursor: str | None) -> dict[str, Any]:
    """``GET /v1/suites``: a page of the tenant's suites, newest first and paged as the jobs list
    (``services.newest_first``), each as ``suites.summary``; with ``state``, only the suites in that
    aggregate state. 400 for a cursor that is not a next_cursor of this list."""
    with ctx.factory() as session:
        rows, next_cursor = services.newest_first(
            session, suites.listing(tenant_id, state), Suite, secret=ctx.secret, purpose=f"suites:{tenant_id}",
            filters={"state": state.value if state else None}, limit=limit, cursor=cursor)
        kids = suites.children_of(session, rows)
        return {"items": [suites.summary(suite, kids[suite.id]) for suite in rows], "next_cursor": next_cursor}


def status(ctx: AppContext, tenant_id: int, suite_id: str) -> dict[str, Any]:
    """``GET /v1/suites/{id}``: the aggregate state, counts, progress and children (``suites.status``)."""
    with ctx.factory() as session:
        suite = get_suite(session, tenant_id, suite_id)
        return suites.status(suite, suites.children(session, suite))


def report(ctx: AppContext, tenant_id: int, suite_id: str) -> dict[str, Any]:
    """The suite report (``suites.build_report``), in every state: it covers the SUCCEEDED children."""
    with ctx.factory() as session:
        suite = get_suite(session, tenant_id, suite_id)
        return _report(session, suite, suites.children(session, suite))


def _report(session: Session, suite: Suite, kids: list[suites.Child]) -> dict[str, Any]:
    finals = suites.final_values(session, [c.job_id for c in kids if c.state == JobState.SUCCEEDED])
    return suites.build_report(suite, kids, finals)


def cancel(ctx: AppContext, tenant_id: int, suite_id: str) -> tuple[dict[str, Any], list[str]]:
    """Cancel every child that has not ended (``suites.cancel``): the suite's status after, and the ids
    of the children asked to cancel. 409 when every child has already ended."""
    with ctx.factory() as session:
        suite = get_suite(session, tenant_id, suite_id)
        kids = suites.children(session, suite)
        if suites.complete(suite, kids):
            raise Problem(409, "suite-terminal", f"every child of suite {suite_id} has already ended",
                          state=suites.overall_state(suite, kids).value)
        asked = suites.cancel(session, suite)
        return suites.status(suite, suites.children(session, suite)), asked


# ------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class SuiteBands:
    """What a suite's figures are drawn from, read once: each configuration's test-error band over its
    SUCCEEDED seeds (none before the first SUCCEEDED child), the suite's state, and whether it is complete
    (only then may a drawing be cached: until then a child may still end and change the bands)."""

    suite_id: str
    bands: list[suites.SeedBand]
    state: JobState
    complete: bool

    def check_drawable(self) -> None:
        """409 while no child has SUCCEEDED with a test-error curve: there is nothing to draw yet."""
        if not self.bands:
            raise Problem(409, "report-not-ready", f"suite {self.suite_id} has no SUCCEEDED child with a "
                          "test-error curve yet", state=self.state.value)


def read_bands(ctx: AppContext, tenant_id: int, suite_id: str) -> SuiteBands:
    """The tenant's suite's :class:`SuiteBands` (404 for another tenant's or an unknown suite)."""
    with ctx.factory() as session:
        suite = get_suite(session, tenant_id, suite_id)
        return _bands(session, suite, suites.children(session, suite))


def report_and_bands(ctx: AppContext, tenant_id: int, suite_id: str) -> tuple[dict[str, Any], SuiteBands]:
    """The suite report and its figures' :class:`SuiteBands` from one read of the suite and its children
    (the HTML page shows both)."""
    with ctx.factory() as session:
        suite = get_suite(session, tenant_id, suite_id)
        kids = suites.children(session, suite)
        return _report(session, suite, kids), _bands(session, suite, kids)


def _bands(session: Session, suite: Suite, kids: list[suites.Child]) -> SuiteBands:
    return SuiteBands(suite.id, suites.error_bands(session, suite, kids), suites.overall_state(suite, kids),
                      suites.complete(suite, kids))


def figure_entries(suite_id: str) -> list[dict[str, Any]]:
    """Name, the paper's figure, title and the PNG and SVG addresses of each figure of a suite."""
    return [{"name": name, "paper": paper, "title": title,
             **{fmt: f"/v1/suites/{suite_id}/figures/{name}.{fmt}" for fmt in figures.FORMATS}}
            for name, (paper, title) in SUITE_FIGURES.items()]


def figure_listing(ctx: AppContext, tenant_id: int, suite_id: str) -> dict[str, Any]:
    """``GET /v1/suites/{id}/figures``: the suite's figures, 409 while there is nothing to draw."""
    read_bands(ctx, tenant_id, suite_id).check_drawable()
    return {"suite_id": suite_id, "figures": figure_entries(suite_id)}


def check_figure_name(name: str) -> None:
    """404 for a figure that suites do not have."""
    if name not in SUITE_FIGURES:
        raise Problem(404, "not-found", f"suites have no figure {name!r}; they have: {', '.join(SUITE_FIGURES)}")


def draw(bands: SuiteBands, name: str, fmt: str) -> bytes:
    """Figure ``name`` of a suite in ``fmt`` (png or svg), drawn from ``bands``; the drawing is kept in
    the figure routes' per-process cache once the suite is complete."""
    check_figure_name(name)
    bands.check_drawable()
    key = (f"suite:{bands.suite_id}", name, fmt)
    cached = CACHE.get(key) if bands.complete else None
    if cached is not None:
        return cached
    curves = [ErrorCurve(b.label, b.examples_seen, b.mean, f"config{i}", b.low, b.high)
              for i, b in enumerate(bands.bands)]
    seeds = sorted({b.seeds for b in bands.bands})
    n = len(bands.bands)
    subtitle = (f"suite {bands.suite_id[:8]}: {n} configuration{'s' if n != 1 else ''}, "
                f"{'/'.join(map(str, seeds))} seed(s) each; line = mean over seeds, band = their min–max")
    with figures.RENDER_LOCK:
        data = figures.save(error_bands(curves, subtitle), fmt)
    if bands.complete:
        CACHE.put(key, data)
    return data


def figure(ctx: AppContext, tenant_id: int, suite_id: str, name: str, fmt: str) -> bytes:
    """``GET /v1/suites/{id}/figures/{name}.{fmt}``: 404 for a figure suites do not have (before the
    database is asked), for another tenant's or an unknown suite; 409 while there is nothing to draw."""
    check_figure_name(name)
    return draw(read_bands(ctx, tenant_id, suite_id), name, fmt)
