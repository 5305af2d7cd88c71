"""Service layer: what the routes (and the CLI) do with the database, free of HTTP details except the
problems they raise. Every query about jobs is scoped to the caller's tenant: another tenant's id
behaves exactly like an id that does not exist (404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_, select, tuple_, update
from sqlalchemy.orm import Session

from api.problems import Problem
from api.security import (
    BadToken,
    generate_api_key,
    hash_api_key,
    key_display_prefix,
    sign_token,
    verify_token,
)
from jobs import lifecycle, reports
from jobs.models import ApiKey, Job, JobState, MetricPoint, MetricSeries, Suite, Tenant, UploadedModel, utcnow

# --------------------------------------------------------------------------------------------- keys


def create_api_key(session: Session, tenant_name: str, secret: bytes) -> tuple[str, Tenant]:
    """A new key for ``tenant_name`` (created if missing). The key itself is returned once, never stored."""
    tenant = session.execute(select(Tenant).where(Tenant.name == tenant_name)).scalar_one_or_none()
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = generate_api_key()
    session.add(ApiKey(tenant_id=tenant.id, prefix=key_display_prefix(key), key_hash=hash_api_key(key, secret)))
    session.flush()
    return key, tenant


@dataclass(frozen=True)
class KeyInfo:
    """What an operator may see of a key: never the key, nor its hash."""

    id: int
    tenant: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[KeyInfo]:
    """Every key (of one tenant when named), oldest first."""
    q = select(ApiKey.id, Tenant.name, ApiKey.prefix, ApiKey.created_at, ApiKey.revoked_at).join(
        Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.id)
    if tenant_name is not None:
        q = q.where(Tenant.name == tenant_name)
    return [KeyInfo(*row) for row in session.execute(q)]


def revoke_api_key(session: Session, key_id: int) -> KeyInfo | None:
    """Mark key ``key_id`` revoked (conditional: a key is revoked once); None if no such live key.

    API processes that verified the key in the last ``GLOROT_AUTH_CACHE_TTL_S`` seconds keep
    accepting it until their cache entry expires.
    """
    res = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return next(k for k in list_api_keys(session) if k.id == key_id)


# --------------------------------------------------------------------------------------------- jobs


JOB_ID_RE = re.compile(r"^[0-9a-fA-F-]{1,64}$")


def check_job_id(job_id: str) -> None:
    """404 for a string that is not an id we could have issued: no need to ask the database."""
    if not JOB_ID_RE.match(job_id):
        raise Problem(404, "job-not-found", f"no job {job_id[:80]!r}")


def get_job(session: Session, tenant_id: int, job_id: str) -> Job:
    check_job_id(job_id)
    job = session.execute(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)).scalar_one_or_none()
    if job is None:
        raise Problem(404, "job-not-found", f"no job {job_id!r}")
    return job


def submit_job(
    session: Session, *, tenant_id: int, kind: str, spec: dict[str, Any], resolved: dict[str, Any],
    total_steps: int | None, idempotency_key: str | None, body_hash: str,
) -> lifecycle.Submission:
    """Store a QUEUED job (``lifecycle.submit``); a repeated Idempotency-Key with another body → 422,
    concurrent duplicates that keep colliding → 409."""
    try:
        return lifecycle.submit(session, tenant_id=tenant_id, kind=kind, spec=spec, resolved=resolved,
                                total_steps=total_steps, idempotency_key=idempotency_key, body_hash=body_hash)
    except lifecycle.IdempotencyKeyReused as e:
        raise Problem(422, "idempotency-key-reused", str(e), job_id=e.job_id) from None
    except lifecycle.IdempotencyConflict as e:
        raise Problem(409, "idempotency-conflict", str(e)) from None


def cancel_job(session: Session, tenant_id: int, job_id: str) -> Job:
    """``lifecycle.request_cancel``: QUEUED → CANCELLED at once; RUNNING → ``cancel_requested``.
    409 when the job is already terminal (terminal states never change)."""
    get_job(session, tenant_id, job_id)  # 404 for an id that is not the tenant's
    try:
        state = lifecycle.request_cancel(session, job_id, tenant_id=tenant_id)
    except lifecycle.TransitionRefused as e:
        raise Problem(409, "job-terminal", f"job {job_id} is already {e.state.value}", state=e.state.value) from None
    except lifecycle.StateMoved:
        raise Problem(409, "job-busy", "the job changed state while cancelling; retry") from None
    if state is None:
        raise Problem(404, "job-not-found", f"no job {job_id!r}")
    session.expire_all()
    job = get_job(session, tenant_id, job_id)
    session.commit()
    return job


def succeeded_job(session: Session, tenant_id: int, job_id: str) -> Job:
    """The tenant's job ``job_id`` once it SUCCEEDED: 404 for another tenant's or an unknown job, 409
    while it is not SUCCEEDED (a report exists only then)."""
    job = get_job(session, tenant_id, job_id)
    if job.state != JobState.SUCCEEDED:
        raise Problem(
            409, "report-not-ready", f"job {job_id} is {job.state}; a report exists only once it SUCCEEDED",
            state=job.state,
        )
    return job


def report_layout(session: Session, tenant_id: int, job_id: str) -> reports.Layout:
    """The stored report's layout (jobs/reports.py), for a job :func:`succeeded_job` answers. Reads one
    small row: the report itself stays in the database."""
    succeeded_job(session, tenant_id, job_id)
    layout = reports.layout_of(session, job_id)
    if layout is None:  # SUCCEEDED and the report commit together; this is a broken database
        raise Problem(500, "report-missing", f"job {job_id} SUCCEEDED but its report is missing")
    return layout


def get_job_report(session: Session, tenant_id: int, job_id: str) -> tuple[Job, dict[str, Any]]:
    """The job (as :func:`succeeded_job` answers) and its whole report as Python objects, reading the
    job's row once (figures and the HTML page need the report parsed; the report route streams it)."""
    job = succeeded_job(session, tenant_id, job_id)
    body = reports.load(session, job_id)
    if body is None:  # SUCCEEDED and the report commit together; this is a broken database
        raise Problem(500, "report-missing", f"job {job_id} SUCCEEDED but its report is missing")
    return job, body


def get_report(session: Session, tenant_id: int, job_id: str) -> dict[str, Any]:
    """The whole report of :func:`get_job_report`, without the job."""
    return get_job_report(session, tenant_id, job_id)[1]


# ---------------------------------------------------------------------------------------- pagination


def _read_cursor(cursor: str, secret: bytes, purpose: str, filters: dict[str, Any], *keys: str) -> list[Any]:
    """The position a signed cursor carries (its ``keys``), checked against the list's ``purpose`` and
    ``filters``; 400 for a cursor that is forged, edited, or from another list or other filters."""
    try:
        pos = verify_token(cursor, secret, purpose)
        if pos.get("f") != filters:
            raise BadToken("the cursor belongs to other filters")
        return [pos[k] for k in keys]
    except (BadToken, KeyError, TypeError) as e:
        raise Problem(400, "invalid-cursor",
                      f"{e}; use the next_cursor of a previous page with the same filters") from None


Listed = TypeVar("Listed", Job, Suite, UploadedModel)
"""What a newest-first list pages: rows with a ``created_at`` and a string ``id``."""


def newest_first(
    session: Session, query: Select[Listed], entity: type[Listed], *, secret: bytes, purpose: str,
    filters: dict[str, Any], limit: int, cursor: str | None,
) -> tuple[list[Listed], str | None]:
    """At most ``limit`` rows of ``query`` (rows of ``entity``), newest first, keyset-paginated on
    (created_at, id), and the cursor of the next page (None on the last). The cursor is signed and bound
    to ``purpose`` (the list and the tenant) and the ``filters``, so it cannot be forged, edited, or
    replayed elsewhere — and grants nothing."""
    if cursor:
        t, i = _read_cursor(cursor, secret, purpose, filters, "t", "i")
        try:
            after = (datetime.fromisoformat(t), str(i))
        except (TypeError, ValueError) as e:
            raise Problem(400, "invalid-cursor", f"{e}; use the next_cursor of a previous page") from None
        query = query.where(or_(entity.created_at < after[0],
                                and_(entity.created_at == after[0], entity.id < after[1])))
    rows = list(session.execute(query.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit + 1))
                .scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = sign_token({"t": last.created_at.isoformat(), "i": last.id, "f": filters}, secret, purpose)
    return rows, next_cursor


def list_jobs(
    session: Session, *, tenant_id: int, secret: bytes, state: JobState | None, kind: str | None, limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    """The tenant's jobs, filtered by state and kind, a page at a time (:func:`newest_first`)."""
    q = select(Job).where(Job.tenant_id == tenant_id)
    if state is not None:
        q = q.where(Job.state == state)
    if kind is not None:
        q = q.where(Job.kind == kind)
    return newest_first(session, q, Job, secret=secret, purpose=f"jobs:{tenant_id}",
                        filters={"state": state.value if state else None, "kind": kind}, limit=limit, cursor=cursor)


def metric_series(
    session: Session, *, tenant_id: int, job_id: str, secret: bytes, layers: list[int] | None,
    statistics: list[str] | None, limit: int, cursor: str | None,
) -> tuple[Job, list[dict[str, Any]], int, str | None]:
    """At most ``limit`` points of the job's series, ordered by (layer, statistic, step), filtered by
    layer and statistic, grouped into series; keyset-paged with a signed cursor."""
    job = get_job(session, tenant_id, job_id)
    filters = {"layer": sorted(layers) if layers else None, "statistic": sorted(statistics) if statistics else None}
    purpose = f"metrics:{tenant_id}:{job_id}"
    q = (
        select(MetricSeries.layer, MetricSeries.statistic, MetricPoint.step, MetricPoint.value)
        .join(MetricPoint, MetricPoint.series_id == MetricSeries.id)
        .where(MetricSeries.job_id == job_id)
    )
    if layers:
        q = q.where(MetricSeries.layer.in_(layers))
    if statistics:
        q = q.where(MetricSeries.statistic.in_(statistics))
    if cursor:
        layer, stat, step = _read_cursor(cursor, secret, purpose, filters, "l", "s", "p")
        try:
            after = (int(layer), str(stat), int(step))
        except (TypeError, ValueError) as e:
            raise Problem(400, "invalid-cursor", f"{e}; use the next_cursor of a previous page") from None
        q = q.where(tuple_(MetricSeries.layer, MetricSeries.statistic, MetricPoint.step) > tuple_(*after))
    rows = session.execute(
        q.order_by(MetricSeries.layer, MetricSeries.statistic, MetricPoint.step).limit(limit + 1)
    ).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = sign_token({"l": last.layer, "s": last.statistic, "p": last.step, "f": filters}, secret, purpose)
    series: list[dict[str, Any]] = []
    for layer, statistic, step, value in rows:
        if not series or (series[-1]["layer"], series[-1]["statistic"]) != (layer, statistic):
            series.append({"layer": layer, "statistic": statistic, "points": []})
        series[-1]["points"].append((step, value))
    return job, series, len(rows), next_cursor
