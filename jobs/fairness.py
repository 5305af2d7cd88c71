"""Fair dispatch across tenants: which QUEUED job a free runner should take next.

A plain FIFO lets a tenant that queued 1,000 jobs make everybody else wait behind all of them. The
rule here is round robin over the tenants that have QUEUED jobs:

1. the tenant with the **fewest RUNNING** jobs goes first;
2. among those, the one whose **last start is the oldest** (a tenant that has not started a job in
   the last ``START_HORIZON_S`` counts as never), so two tenants with nothing running alternate;
3. then the tenant whose oldest QUEUED job is the oldest (plain FIFO between equals);

and a tenant's own jobs run oldest first. :func:`fair_queued` turns the rule into an ordered list of
job ids for ``limit`` free slots (each pick counts as a start, so the list alternates tenants), read
in four small grouped queries. A tenant's single job therefore starts at the next free slot, within
one job duration, whatever another tenant has queued.

Both modes use it. The local runner claims the ids in this order. A Celery delivery of a QUEUED
job whose tenant is not the one due runs the due tenant's next job instead (:func:`due_instead`) and
puts the skipped job's message back at the tail of the queue (``worker.tasks``), so every QUEUED job
keeps a message and the broker stays a doorbell: the row decides. The claim itself is the usual
conditional UPDATE, so racing runners still claim each job once; a delivery that lost that race for
the due job claims nothing, and both jobs still have their messages.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs.models import Job, JobState, utcnow

#: A tenant whose last start is older than this is treated as one that never started a job. The
#: window keeps the "last start" query on the recently active rows (the (state, heartbeat_at) index).
START_HORIZON_S = 3600.0

_STARTED = (JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class FairPick:
    """One QUEUED job, in fair order."""

    job_id: str
    tenant_id: int


def fair_queued(factory: sessionmaker[Session], limit: int = 10) -> list[str]:
    """Ids of up to ``limit`` QUEUED jobs in the order free runners should claim them."""
    return [p.job_id for p in fair_picks(factory, limit)]


def fair_picks(factory: sessionmaker[Session], limit: int = 10) -> list[FairPick]:
    """Up to ``limit`` QUEUED jobs in fair order (module docstring), with their tenants."""
    if limit <= 0:
        return []
    with factory() as s:
        queued = s.execute(
            select(Job.tenant_id, func.count(), func.min(Job.created_at))
            .where(Job.state == JobState.QUEUED).group_by(Job.tenant_id)
        ).all()
        if not queued:
            return []
        running = dict(s.execute(  # type: ignore[arg-type]
            select(Job.tenant_id, func.count()).where(Job.state == JobState.RUNNING).group_by(Job.tenant_id)
        ).all())
        cutoff = utcnow() - timedelta(seconds=START_HORIZON_S)
        last_start = dict(s.execute(  # type: ignore[arg-type]
            select(Job.tenant_id, func.max(Job.started_at))
            .where(Job.state.in_(_STARTED), Job.heartbeat_at >= cutoff).group_by(Job.tenant_id)
        ).all())
        order = _round_robin(
            [(row[0], int(row[1]), row[2]) for row in queued], running, last_start, limit)
        wanted: dict[int, int] = {}
        for tenant in order:
            wanted[tenant] = wanted.get(tenant, 0) + 1
        jobs = {tenant: list(s.execute(
            select(Job.id).where(Job.tenant_id == tenant, Job.state == JobState.QUEUED)
            .order_by(Job.created_at, Job.id).limit(n)).scalars()) for tenant, n in wanted.items()}
    picks: list[FairPick] = []
    for tenant in order:
        if jobs[tenant]:
            picks.append(FairPick(jobs[tenant].pop(0), tenant))
    return picks


def _round_robin(queued: list[tuple[int, int, object]], running: dict[int, int], last_start: dict[int, object],
                 limit: int) -> list[int]:
    """Tenant ids for ``limit`` picks: fewest running, then oldest last start, then oldest queued job.
    Each pick counts as a start now (it goes to the back) and as one more running job."""
    seq = itertools.count()
    heap: list[tuple[int, tuple[int, object], object, int, int]] = []
    for tenant, count, oldest in queued:
        started = last_start.get(tenant)
        recency: tuple[int, object] = (0, 0) if started is None else (1, started)
        heap.append((running.get(tenant, 0), recency, oldest, tenant, count))
    heapq.heapify(heap)
    order: list[int] = []
    while heap and len(order) < limit:
        n_running, _, oldest, tenant, count = heapq.heappop(heap)
        order.append(tenant)
        if count > 1:  # picked just now: after every tenant with as many running that started earlier
            heapq.heappush(heap, (n_running + 1, (2, next(seq)), oldest, tenant, count - 1))
    return order


def due_instead(factory: sessionmaker[Session], delivered_id: str) -> str:
    """The job a Celery delivery of ``delivered_id`` should run: that job itself while it is QUEUED and
    its tenant is the one due, else the due tenant's next job. A delivery of a job that is no longer
    QUEUED (a duplicate, a cancelled job) keeps its id and, as before, claims nothing."""
    with factory() as s:
        row = s.execute(select(Job.state, Job.tenant_id).where(Job.id == delivered_id)).one_or_none()
    if row is None or row.state != JobState.QUEUED:
        return delivered_id
    picks = fair_picks(factory, 1)
    if not picks or picks[0].tenant_id == row.tenant_id:
        return delivered_id
    return picks[0].job_id


def held_by(factory: sessionmaker[Session], worker_id: str) -> str | None:
    """The RUNNING job ``worker_id`` holds (a Celery delivery may hold another job than the one its
    message named: :func:`due_instead`)."""
    with factory() as s:
        return s.execute(
            select(Job.id).where(Job.state == JobState.RUNNING, Job.worker_id == worker_id).limit(1)
        ).scalar_one_or_none()
