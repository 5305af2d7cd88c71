"""The metric-series store: a job's (layer, statistic) series and their (step, value) points.

A point is keyed narrowly by (series_id, step) and written in batches of :data:`METRIC_BATCH`
(executemany); NaN and infinities are stored as NULL (SQLite cannot store NaN). Streaming writes are
upserts, so a batch whose commit outcome was lost may be written again harmlessly. The callers
(``jobs.lifecycle`` and the worker's watcher) decide in which fenced transaction these run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from jobs.models import MetricPoint, MetricSeries

#: Metric points per INSERT statement (executemany batches; row-by-row logging is far slower).
METRIC_BATCH = 5000

#: One point: (step, layer, statistic, value), the rows ``glorot_core.report.metric_rows`` yields.
MetricRow = tuple[int, int, str, float]


def delete_metric_series(s: Session, job_id: str) -> None:
    """Every series of the job and their points (explicitly: no reliance on ON DELETE CASCADE)."""
    series = select(MetricSeries.id).where(MetricSeries.job_id == job_id)
    s.execute(delete(MetricPoint).where(MetricPoint.series_id.in_(series)).execution_options(synchronize_session=False))
    s.execute(delete(MetricSeries).where(MetricSeries.job_id == job_id).execution_options(synchronize_session=False))


def _dialect_insert(s: Session, model: type[Any]) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support (PostgreSQL and SQLite, the two databases we run on)."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(model)
    if name == "sqlite":
        return sqlite_insert(model)
    raise NotImplementedError(f"streaming metric series needs ON CONFLICT; {name} is not supported")


def _group(rows: Iterable[MetricRow]) -> dict[tuple[int, str], dict[int, float | None]]:
    """Points per (layer, statistic); the last value of a repeated step wins; non-finite → None."""
    points: dict[tuple[int, str], dict[int, float | None]] = {}
    for step, layer, statistic, value in rows:
        v = float(value)
        points.setdefault((int(layer), str(statistic)[:64]), {})[int(step)] = v if math.isfinite(v) else None
    return points


def write_metric_rows(s: Session, job_id: str, rows: Iterable[MetricRow], *, upsert: bool = False) -> None:
    """Series first (one row per layer × statistic), then points in batches of METRIC_BATCH.

    ``upsert`` (streaming): series that exist are kept and a point already there takes the new value.
    Without it (the final write, after the job's series were deleted) plain INSERTs.
    """
    points = _group(rows)
    if not points:
        return
    series_rows = [{"job_id": job_id, "layer": k[0], "statistic": k[1]} for k in points]
    point_insert: Any = insert(MetricPoint)
    if upsert:
        s.execute(_dialect_insert(s, MetricSeries).on_conflict_do_nothing(
            index_elements=["job_id", "layer", "statistic"]), series_rows)
        point_insert = _dialect_insert(s, MetricPoint)
        point_insert = point_insert.on_conflict_do_update(
            index_elements=["series_id", "step"], set_={"value": point_insert.excluded.value})
    else:
        s.execute(insert(MetricSeries), series_rows)
    ids = {
        (layer, stat): sid
        for sid, layer, stat in s.execute(
            select(MetricSeries.id, MetricSeries.layer, MetricSeries.statistic).where(MetricSeries.job_id == job_id)
        )
    }
    batch: list[dict[str, Any]] = []
    for key, series in points.items():
        sid = ids[key]
        for step, value in series.items():
            batch.append({"series_id": sid, "step": step, "value": value})
            if len(batch) >= METRIC_BATCH:
                s.execute(point_insert, batch)
                batch = []
    if batch:
        s.execute(point_insert, batch)
