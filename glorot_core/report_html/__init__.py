"""A report as one self-contained HTML page (docs/figures.md, "HTML report"): the figures, the per-layer
tables at initialisation and at the end, the verdicts with their numbers, the linear theory beside the
measurements, the spec and the run's facts.

Server-rendered with Jinja2 (autoescape on: a spec's name or a verdict's message is text, never markup)
and readable without JavaScript: the page has no script, loads nothing from elsewhere (its Content
Security Policy says so, ``CONTENT_SECURITY_POLICY``, as a ``<meta>`` and, from the service, as a
header) and embeds every figure as a ``data:`` URI, so the same bytes work fetched from the service
with an API key, saved to a file, opened offline or printed (print CSS: no navigation, no figure split
over pages).

``render_report(report, fmt=…, draw=…)`` renders a job's report; ``draw(name, fmt)`` returns a figure's
bytes (the service passes its figure cache; by default ``glorot_core.figures.render`` draws them).
``render_suite_report(report, figures=…)`` renders a multi-seed suite's report with its figures.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from glorot_core import figures
from glorot_core.report_html import suite_view, view

FORMATS = figures.FORMATS
DEFAULT_FORMAT = "svg"
"""Figures embed as SVG by default: vector, so they print sharp, and no larger than the PNGs here."""
MEDIA_TYPE = "text/html; charset=utf-8"
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                           "form-action 'none'")
"""No script, no fetch, no font, no frame: only the page's own style and its embedded images."""

Draw = Callable[[str, str], bytes]
"""``draw(figure_name, fmt)`` → the figure's PNG or SVG bytes."""


@dataclass(frozen=True)
class EmbeddedFigure:
    """A figure as the page embeds it: its name, the paper's figure, a title and a ``data:`` URI."""

    name: str
    paper: str
    title: str
    media_type: str
    data_uri: str


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The templates (package data of ``glorot_core.report_html``), autoescaped, strict about
    undefined names (a typo in a template fails the render instead of printing nothing)."""
    env = Environment(loader=PackageLoader("glorot_core.report_html", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = view.number_text
    env.globals["CSP"] = CONTENT_SECURITY_POLICY
    return env


def data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def embedded_figures(report: Mapping[str, Any], fmt: str = DEFAULT_FORMAT, draw: Draw | None = None,
                     ) -> list[EmbeddedFigure]:
    """Every figure the report can be drawn as (``glorot_core.figures.available``), drawn by ``draw``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    rep = dict(report)
    if draw is None:
        def draw(name: str, f: str) -> bytes:
            return figures.render(rep, name, f)
    return [embed(d.name, d.paper, d.title, draw(d.name, fmt), fmt) for d in figures.available(rep)]


def render_report(report: Mapping[str, Any], *, fmt: str = DEFAULT_FORMAT, draw: Draw | None = None,
                  job: Mapping[str, Any] | None = None) -> str:
    """The HTML page of one report. ``job`` (id, kind, state, created/finished times) heads the page
    when the report comes from the service."""
    return environment().get_template("report.html.j2").render(
        title=view.title(report),
        job=dict(job or {}),
        summary=view.summary(report),
        verdicts=view.verdict_rows(report),
        columns=view.LAYER_COLUMNS,
        tables=view.snapshot_tables(report),
        theory=view.theory_rows(report),
        theory_equations=(report.get("theory") or {}).get("equations"),
        theory_convention=((report.get("resolved") or {}).get("conventions") or {}).get("theory"),
        figures=embedded_figures(report, fmt, draw),
        spec_json=view.pretty_json(report.get("spec") or {}),
        facts=view.run_facts(report),
    )


def embed(name: str, paper: str, title: str, data: bytes, fmt: str) -> EmbeddedFigure:
    """A drawn figure (PNG or SVG bytes) as the page embeds it."""
    media = figures.MEDIA_TYPES[fmt]
    return EmbeddedFigure(name, paper, title, media, data_uri(data, media))


def render_suite_report(report: Mapping[str, Any], *, figures: Sequence[EmbeddedFigure] = ()) -> str:
    """The HTML page of a multi-seed suite's report (``glorot.suite-report/1``); ``figures`` are the
    suite's drawn figures (the service draws them from its children's metric series)."""
    return environment().get_template("suite.html.j2").render(
        suite_id=str(report.get("suite_id", "")),
        complete=bool(report.get("complete")),
        confidence=view.number_text(report.get("confidence"), percent=True),
        summary=suite_view.summary(report),
        configs=suite_view.config_views(report),
        failed=list(report.get("failed") or []),
        figures=list(figures),
    )


__all__ = ["CONTENT_SECURITY_POLICY", "DEFAULT_FORMAT", "FORMATS", "MEDIA_TYPE", "EmbeddedFigure", "embed",
           "embedded_figures", "environment", "render_report", "render_suite_report"]
