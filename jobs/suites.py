"""Multi-seed suites in the database: the suite row, its children, their aggregate state, the suite
report and the test-error curves of its figures (docs/suites.md).

A suite is configurations × seeds, one child job each. The children are ordinary jobs, created by the
API's submission path (``jobs.lifecycle.submit``, with the tenant's checks and dispatch) and linked
here by ``suite_children`` rows; this module never changes a job's state except through
``jobs.lifecycle.request_cancel``. Nothing about a suite's progress is stored: its state, counts and
progress are derived from its children's rows each time they are read, so they cannot disagree.

Statistics come from the children's metric series (``metric_series`` / ``metric_points``), which for a
SUCCEEDED job are exactly its report's scalars: the "final" value of a statistic is its point at the
series' last step. Reading those few rows costs the same whatever the reports' sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, and_, case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from jobs import lifecycle
from jobs.models import Job, JobState, MetricPoint, MetricSeries, Suite, SuiteChild, utcnow
from jobs.progress import JobProgress
from jobs.suite_stats import CONFIDENCE, summarize

SCHEMA = "glorot.suite-report/1"
"""The ``schema`` field of a suite report; bumped when a field changes meaning."""

KEY_STATISTICS: tuple[str, ...] = (
    "test_error", "train_loss", "end_to_end.mean_sv",  # whole network (layer 0)
    "activation.std", "saturation.fraction", "backprop_grad.std", "weight_grad.std", "jacobian.mean_sv",
)
"""The statistics a suite report summarises across seeds, at each run's last snapshot: test error and
training loss, the std of each layer's activations (Figs 2–3, eq. 5), its saturated fraction, the std
of the back-propagated and weight gradients (eqs 6–7, Figs 7–9), and the Jacobians' mean singular
value (§4.2.2; only when the runs measured them)."""

PAPER_SOURCE = "Glorot & Bengio (2010), Table 1 (test error, %)"


class SuiteKeyReused(Exception):
    """The Idempotency-Key named another suite body (``suite_id``: the original suite)."""

    def __init__(self, suite_id: str) -> None:
        super().__init__("this Idempotency-Key was already used for a suite with a different request body")
        self.suite_id = suite_id


# ------------------------------------------------------------------------------------------- writing


def create(session: Session, *, tenant_id: int, configs: list[dict[str, Any]], seeds: list[list[int]],
           idempotency_key: str | None, request_hash: str) -> tuple[Suite, bool]:
    """Store the suite row (committed); ``(suite, False)`` when ``idempotency_key`` names one already
    made with the same body, :class:`SuiteKeyReused` when with another. Children come after
    (:func:`link_child`), each committed with its job."""
    for _ in range(3):
        if idempotency_key is not None:
            existing = by_key(session, tenant_id, idempotency_key)
            if existing is not None:
                session.commit()
                if existing.request_hash != request_hash:
                    raise SuiteKeyReused(existing.id)
                return existing, False
        suite = Suite(tenant_id=tenant_id, configs=configs, seeds=seeds,
                      children_expected=sum(len(s) for s in seeds), idempotency_key=idempotency_key,
                      request_hash=request_hash, created_at=utcnow())
        session.add(suite)
        try:
            session.commit()
        except IntegrityError:  # a concurrent request with the same key won: read its suite
            session.rollback()
            if idempotency_key is None:
                raise
            continue
        return suite, True
    raise lifecycle.IdempotencyConflict("concurrent requests with this Idempotency-Key; retry")


def child_key(suite_id: str, position: int) -> str:
    """The Idempotency-Key of a suite's child job: creating the children again (a replayed request that
    finds a suite left incomplete) finds the jobs already made instead of making new ones."""
    return f"suite:{suite_id}:{position}"


def link_child(session: Session, suite_id: str, position: int, config_index: int, seed_index: int,
               job_id: str) -> None:
    """Record that ``job_id`` is child ``position`` of the suite (once; committed)."""
    exists = session.execute(select(SuiteChild.job_id).where(
        SuiteChild.suite_id == suite_id, SuiteChild.position == position)).scalar_one_or_none()
    if exists is None:
        session.add(SuiteChild(suite_id=suite_id, position=position, config_index=config_index,
                               seed_index=seed_index, job_id=job_id))
    session.commit()


# ------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Child:
    """One child job as the suite shows it."""

    position: int
    config_index: int
    seed_index: int
    seed: int
    job_id: str
    state: JobState
    progress: JobProgress
    error: str | None
    cancel_requested: bool
    batch_size: int

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "config_index": self.config_index, "seed": self.seed,
                               "state": self.state.value, "progress": self.progress.fraction,
                               "cancel_requested": self.cancel_requested}
        if self.state == JobState.FAILED:
            out["error"] = self.error
        return out


def by_key(session: Session, tenant_id: int, idempotency_key: str) -> Suite | None:
    """The tenant's suite made with ``idempotency_key``, if any."""
    return session.execute(select(Suite).where(
        Suite.tenant_id == tenant_id, Suite.idempotency_key == idempotency_key)).scalar_one_or_none()


def get(session: Session, tenant_id: int, suite_id: str) -> Suite | None:
    """The tenant's suite ``suite_id``; None for an unknown id or another tenant's suite."""
    return session.execute(select(Suite).where(Suite.id == suite_id, Suite.tenant_id == tenant_id)).scalar_one_or_none()


def children(session: Session, suite: Suite) -> list[Child]:
    """The suite's children with their jobs' state, in position order (configuration, then seed)."""
    return children_of(session, [suite])[suite.id]


def children_of(session: Session, of: Sequence[Suite]) -> dict[str, list[Child]]:
    """The children of each suite of ``of`` (by suite id, each in position order), in one query."""
    by_id = {s.id: s for s in of}
    out: dict[str, list[Child]] = {suite_id: [] for suite_id in by_id}
    if not by_id:
        return out
    batch_size = Job.resolved_spec[("train", "batch_size")].as_integer()  # not the whole spec: a list reads many
    rows = session.execute(
        select(SuiteChild.suite_id, SuiteChild.position, SuiteChild.config_index, SuiteChild.seed_index, Job.id,
               Job.state, Job.progress, Job.error, Job.cancel_requested, batch_size.label("batch_size"))
        .join(Job, Job.id == SuiteChild.job_id)
        .where(SuiteChild.suite_id.in_(list(by_id)))
        .order_by(SuiteChild.suite_id, SuiteChild.position)
    ).all()
    for r in rows:
        seed = int(by_id[r.suite_id].seeds[r.config_index][r.seed_index])
        out[r.suite_id].append(Child(
            position=r.position, config_index=r.config_index, seed_index=r.seed_index, seed=seed, job_id=r.id,
            state=JobState(r.state), progress=JobProgress.of(r.progress), error=r.error,
            cancel_requested=bool(r.cancel_requested), batch_size=int(r.batch_size or 1)))
    return out


def listing(tenant_id: int, state: JobState | None = None) -> Select[Suite]:
    """The tenant's suites, unordered (the caller pages them); with ``state``, only those whose
    :func:`overall_state` is ``state``, decided in SQL from counts of their children's states (the same
    rule, so that a page is filtered before it is cut)."""
    query = select(Suite).where(Suite.tenant_id == tenant_id)
    if state is None:
        return query
    counts = _child_state_counts(tenant_id)
    return query.outerjoin(counts, counts.c.suite_id == Suite.id).where(_overall_state_sql(counts) == state.value)


def _child_state_counts(tenant_id: int) -> Subquery:
    """Per suite of the tenant that has children: how many, and how many QUEUED, not yet ended, FAILED and
    CANCELLED."""
    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0))

    mine = aliased(Suite)  # the tenant's suites, apart from the listing's own ``suites``
    return (
        select(SuiteChild.suite_id.label("suite_id"), func.count().label("n"),
               count(Job.state == JobState.QUEUED).label("queued"),
               count(Job.state.in_([JobState.QUEUED, JobState.RUNNING])).label("active"),
               count(Job.state == JobState.FAILED).label("failed"),
               count(Job.state == JobState.CANCELLED).label("cancelled"))
        .join(Job, Job.id == SuiteChild.job_id)
        .join(mine, mine.id == SuiteChild.suite_id)
        .where(mine.tenant_id == tenant_id)
        .group_by(SuiteChild.suite_id)
        .subquery()
    )


def _overall_state_sql(counts: Subquery) -> ColumnElement[str]:
    """:func:`overall_state` as an SQL expression over :func:`_child_state_counts` (outer-joined: a suite
    without children yet has NULL counts, read as 0)."""
    n, queued, active, failed, cancelled = (func.coalesce(counts.c[name], 0)
                                            for name in ("n", "queued", "active", "failed", "cancelled"))
    going = or_(n < Suite.children_expected, active > 0)
    return case(
        (and_(going, queued == n), JobState.QUEUED.value),
        (going, JobState.RUNNING.value),
        (Suite.cancel_requested_at.is_not(None), JobState.CANCELLED.value),
        (failed > 0, JobState.FAILED.value),
        (cancelled > 0, JobState.CANCELLED.value),
        else_=JobState.SUCCEEDED.value,
    )


def overall_state(suite: Suite, kids: Sequence[Child]) -> JobState:
    """QUEUED while no child has started; RUNNING while any is QUEUED or RUNNING; once every child is
    terminal: CANCELLED if the suite was cancelled, else FAILED if any child failed, else CANCELLED if
    any was cancelled, else SUCCEEDED."""
    states = [c.state for c in kids]
    if len(kids) < suite.children_expected or any(not s.terminal for s in states):
        return JobState.QUEUED if all(s == JobState.QUEUED for s in states) else JobState.RUNNING
    if suite.cancel_requested_at is not None:
        return JobState.CANCELLED
    if JobState.FAILED in states:
        return JobState.FAILED
    if JobState.CANCELLED in states:
        return JobState.CANCELLED
    return JobState.SUCCEEDED


def complete(suite: Suite, kids: Sequence[Child]) -> bool:
    """Every child exists and is terminal: the report and figures will not change any more."""
    return len(kids) == suite.children_expected and all(c.state.terminal for c in kids)


def status(suite: Suite, kids: Sequence[Child]) -> dict[str, Any]:
    """``GET /v1/suites/{id}``: the :func:`summary` with the children and the failed ones."""
    return {
        **summary(suite, kids),
        "children": [c.as_json() for c in kids],
        "failed": [{"job_id": c.job_id, "config_index": c.config_index, "seed": c.seed, "error": c.error}
                   for c in kids if c.state == JobState.FAILED],
    }


def summary(suite: Suite, kids: Sequence[Child]) -> dict[str, Any]:
    """A suite as ``GET /v1/suites`` lists it: the aggregate state, counts per state, progress and the
    configurations with their seeds, without the per-child lists (a suite may have 300 children).

    ``progress`` is the mean over the expected children of each one's fraction done, a terminal child
    counting as done (1), so it reaches 1 exactly when the suite is complete."""
    counts = {s.value.lower(): 0 for s in JobState}
    for c in kids:
        counts[c.state.value.lower()] += 1
    done = [1.0 if c.state.terminal else float(c.progress.fraction) for c in kids]
    progress = math.fsum(done) / suite.children_expected if suite.children_expected else 1.0
    return {
        "id": suite.id,
        "state": overall_state(suite, kids).value,
        "complete": complete(suite, kids),
        "cancel_requested": suite.cancel_requested_at is not None,
        "created_at": suite.created_at.isoformat(),
        "counts": counts,
        "children_expected": suite.children_expected,
        "progress": progress,
        "configs": [{"index": i, "label": c["label"], "preset": c.get("preset"), "budget": c.get("budget"),
                     "seeds": suite.seeds[i]} for i, c in enumerate(suite.configs)],
        "links": _links(suite.id),
    }


def _links(suite_id: str) -> dict[str, str]:
    base = f"/v1/suites/{suite_id}"
    return {"self": base, "report": f"{base}/report", "cancel": f"{base}/cancel", "figures": f"{base}/figures"}


# ---------------------------------------------------------------------------------------- cancelling


def cancel(session: Session, suite: Suite) -> list[str]:
    """Mark the suite cancelled and cancel every child that is not terminal, each by the lifecycle's
    cancel transition (QUEUED → CANCELLED at once, RUNNING → ``cancel_requested``), the QUEUED ones
    first. A child that ends on its own meanwhile is left as it ended. Returns the ids of the children
    asked to cancel."""
    if suite.cancel_requested_at is None:
        suite.cancel_requested_at = utcnow()
    session.commit()
    asked = []
    # QUEUED children first: a worker freed by a stopping sibling must find nothing of the suite to start
    for c in sorted(children(session, suite), key=lambda c: c.state != JobState.QUEUED):
        if c.state.terminal:
            continue
        for _ in range(3):  # the child may move (QUEUED → RUNNING) under the conditional UPDATE
            try:
                lifecycle.request_cancel(session, c.job_id, tenant_id=suite.tenant_id)
            except lifecycle.TransitionRefused:  # it ended by itself in between
                break
            except lifecycle.StateMoved:
                continue
            asked.append(c.job_id)
            break
    return asked


# ------------------------------------------------------------------------------------------- report


Finals = dict[str, dict[tuple[int, str], tuple[int, float | None]]]
"""Per job id: (layer, statistic) → (the series' last step, its value there; None = not finite)."""


def final_values(session: Session, job_ids: Sequence[str], statistics: Sequence[str] = KEY_STATISTICS) -> Finals:
    """Per job: (layer, statistic) → (last step, value there) of each of ``statistics``' series."""
    if not job_ids:
        return {}
    last = (
        select(MetricPoint.series_id, func.max(MetricPoint.step).label("step"))
        .join(MetricSeries, MetricSeries.id == MetricPoint.series_id)
        .where(MetricSeries.job_id.in_(list(job_ids)), MetricSeries.statistic.in_(list(statistics)))
        .group_by(MetricPoint.series_id)
        .subquery()
    )
    rows = session.execute(
        select(MetricSeries.job_id, MetricSeries.layer, MetricSeries.statistic, MetricPoint.step, MetricPoint.value)
        .join(last, last.c.series_id == MetricSeries.id)
        .join(MetricPoint, and_(MetricPoint.series_id == last.c.series_id, MetricPoint.step == last.c.step))
    ).all()
    out: Finals = {}
    for job_id, layer, statistic, step, value in rows:
        out.setdefault(job_id, {})[(int(layer), str(statistic))] = (int(step), value)
    return out


def _statistic_order(key: tuple[int, str]) -> tuple[int, int, int]:
    layer, statistic = key
    return (0 if layer == 0 else 1, layer, KEY_STATISTICS.index(statistic) if statistic in KEY_STATISTICS else 99)


def _paper(config: dict[str, Any], test_error: dict[str, Any] | None) -> dict[str, Any] | None:
    value = config.get("paper_test_error_percent")
    if value is None:
        return None
    ours: dict[str, Any] = {"mean_percent": None, "ci95_percent": None}
    within = None
    if test_error is not None and test_error["mean"] is not None:
        ours["mean_percent"] = 100.0 * test_error["mean"]
        if test_error["ci95"] is not None:
            lo, hi = (100.0 * v for v in test_error["ci95"])
            ours["ci95_percent"] = [lo, hi]
            within = lo <= value <= hi
    return {"source": PAPER_SOURCE, "test_error_percent": value, "test_error": value / 100.0, "ours": ours,
            "paper_within_ci95": within}


def build_report(suite: Suite, kids: Sequence[Child], finals: Finals) -> dict[str, Any]:
    """The suite report (schema :data:`SCHEMA`, documented in docs/suites.md): per configuration, per
    statistic of :data:`KEY_STATISTICS` and layer, each SUCCEEDED seed's final value and their mean,
    sample std and 95 % Student-t interval; the paper's Table 1 value beside ours where there is one.
    Children not (yet) SUCCEEDED are listed under ``runs`` but contribute no value."""
    configs = []
    for i, config in enumerate(suite.configs):
        mine = [c for c in kids if c.config_index == i]
        ok = [c for c in mine if c.state == JobState.SUCCEEDED]
        keys = sorted({k for c in ok for k in finals.get(c.job_id, {})}, key=_statistic_order)
        stats = []
        for layer, statistic in keys:
            values = []
            for c in ok:
                step, value = finals.get(c.job_id, {}).get((layer, statistic), (None, None))
                values.append({"seed": c.seed, "job_id": c.job_id, "step": step, "value": value})
            summary = summarize(v["value"] for v in values)
            stats.append({"statistic": statistic, "layer": layer, "values": values, **summary.as_json()})
        test_error = next((s for s in stats if s["layer"] == 0 and s["statistic"] == "test_error"), None)
        configs.append({
            "index": i, "label": config["label"], "preset": config.get("preset"), "budget": config.get("budget"),
            "seeds": suite.seeds[i],
            "runs": [{"job_id": c.job_id, "seed": c.seed, "state": c.state.value,
                      **({"error": c.error} if c.state == JobState.FAILED else {})} for c in mine],
            "n_succeeded": len(ok),
            "paper": _paper(config, test_error),
            "statistics": stats,
        })
    return {
        "schema": SCHEMA,
        "suite_id": suite.id,
        "state": overall_state(suite, kids).value,
        "complete": complete(suite, kids),
        "confidence": CONFIDENCE,
        "statistics_at": "each run's last snapshot (the last point of its metric series)",
        "configs": configs,
        "failed": [{"job_id": c.job_id, "config_index": c.config_index, "seed": c.seed, "error": c.error}
                   for c in kids if c.state == JobState.FAILED],
    }


# -------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class SeedBand:
    """One configuration's test error against examples seen across its seeds: at each step any seed
    measured, the mean over the seeds with a finite value there and their minimum and maximum."""

    label: str
    examples_seen: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


def error_bands(session: Session, suite: Suite, kids: Sequence[Child]) -> list[SeedBand]:
    """The test-error band of each configuration with at least one SUCCEEDED child (Figs 11–12)."""
    ok = [c for c in kids if c.state == JobState.SUCCEEDED]
    if not ok:
        return []
    rows = session.execute(
        select(MetricSeries.job_id, MetricPoint.step, MetricPoint.value)
        .join(MetricPoint, MetricPoint.series_id == MetricSeries.id)
        .where(MetricSeries.job_id.in_([c.job_id for c in ok]), MetricSeries.layer == 0,
               MetricSeries.statistic == "test_error")
        .order_by(MetricSeries.job_id, MetricPoint.step)
    ).all()
    by_job: dict[str, list[tuple[int, float | None]]] = {}
    for job_id, step, value in rows:
        by_job.setdefault(job_id, []).append((int(step), value))
    bands = []
    for i, config in enumerate(suite.configs):
        mine = [c for c in ok if c.config_index == i]
        at: dict[int, list[float]] = {}
        for c in mine:
            for step, value in by_job.get(c.job_id, []):
                if value is not None and math.isfinite(value):
                    at.setdefault(step * c.batch_size, []).append(float(value))
        if not mine or not at:
            continue
        xs = sorted(at)
        bands.append(SeedBand(label=f"{config['label']} ({len(mine)} seed{'s' if len(mine) != 1 else ''})",
                              examples_seen=xs, mean=[math.fsum(at[x]) / len(at[x]) for x in xs],
                              low=[min(at[x]) for x in xs], high=[max(at[x]) for x in xs], seeds=len(mine)))
    return bands
