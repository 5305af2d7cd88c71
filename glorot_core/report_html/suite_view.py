"""What the HTML page of a multi-seed suite shows, read out of the suite report (schema
``glorot.suite-report/1``, built by the service from its children's final metric values) as plain
rows: test error per configuration across seeds beside the paper's Table 1 value, the runs, and every
statistic's per-seed values with their mean, sample std and Student-t interval.

Nothing is recomputed: the mean, std and interval are the report's. Fractions (test error, saturated
fraction) are shown as percentages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glorot_core.report_html.view import Cell, cell, number_text

Report = Mapping[str, Any]

PERCENT_STATISTICS = frozenset({"test_error", "saturation.fraction"})
"""Statistics that are fractions, shown as percentages."""


@dataclass(frozen=True)
class StatisticRow:
    statistic: str
    layer: str
    n: int
    missing: int
    mean: Cell
    std: Cell
    ci: str
    per_seed: list[tuple[str, str]]


@dataclass(frozen=True)
class ConfigView:
    index: int
    label: str
    preset: str | None
    budget: str | None
    seeds: list[Any]
    runs: list[Mapping[str, Any]]
    n_succeeded: int
    test_error: StatisticRow | None
    paper: Mapping[str, Any] | None
    paper_percent: str
    paper_within: str
    statistics: list[StatisticRow]


def interval_text(ci: Any, *, percent: bool = False) -> str:
    """``[low, high]`` of a confidence interval, or an em dash when there is none (fewer than 2 seeds)."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "—"
    return f"[{number_text(ci[0], percent=percent)}, {number_text(ci[1], percent=percent)}]"


def statistic_row(stat: Mapping[str, Any]) -> StatisticRow:
    percent = stat.get("statistic") in PERCENT_STATISTICS
    layer = stat.get("layer")
    return StatisticRow(
        statistic=str(stat.get("statistic", "")), layer="network" if layer == 0 else str(layer),
        n=int(stat.get("n") or 0), missing=int(stat.get("missing") or 0),
        mean=cell(stat.get("mean"), percent=percent), std=cell(stat.get("std"), percent=percent),
        ci=interval_text(stat.get("ci95"), percent=percent),
        per_seed=[(str(v.get("seed")), number_text(v.get("value"), percent=percent))
                  for v in stat.get("values") or []],
    )


def config_views(report: Report) -> list[ConfigView]:
    out = []
    for c in report.get("configs") or []:
        stats = [statistic_row(s) for s in c.get("statistics") or []]
        test_error = next((s for s in stats if s.statistic == "test_error" and s.layer == "network"), None)
        paper = c.get("paper")
        within = paper.get("paper_within_ci95") if isinstance(paper, Mapping) else None
        out.append(ConfigView(
            index=int(c.get("index", len(out))), label=str(c.get("label", "")), preset=c.get("preset"),
            budget=c.get("budget"), seeds=list(c.get("seeds") or []), runs=list(c.get("runs") or []),
            n_succeeded=int(c.get("n_succeeded") or 0), test_error=test_error, paper=paper,
            paper_percent=f"{number_text(paper.get('test_error_percent'))}%" if isinstance(paper, Mapping) else "—",
            paper_within="—" if within is None else number_text(bool(within)),
            statistics=stats,
        ))
    return out


def summary(report: Report) -> list[tuple[str, str]]:
    configs = report.get("configs") or []
    runs = [r for c in configs for r in c.get("runs") or []]
    return [
        ("state", str(report.get("state", ""))),
        ("complete", number_text(bool(report.get("complete")))),
        ("configurations", str(len(configs))),
        ("runs", f"{sum(1 for r in runs if r.get('state') == 'SUCCEEDED')} SUCCEEDED of {len(runs)}"),
        ("confidence", number_text(report.get("confidence"), percent=True)),
        ("statistics at", str(report.get("statistics_at", ""))),
    ]
