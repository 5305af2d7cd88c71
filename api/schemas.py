"""Response and query models of the REST API (v1). Requests bodies are ExperimentSpec (glorot_core)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.models import Job, JobState
from jobs.progress import JobProgress


class JobLinks(BaseModel):
    self: str
    cancel: str
    report: str
    metrics: str


class JobOut(BaseModel):
    """A job as clients see it (GET /v1/jobs/{id})."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    state: JobState
    attempt: int = Field(description="how many times a runner has claimed the job")
    progress: JobProgress
    error: str | None = None
    cancel_requested: bool
    idempotency_key: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    spec: dict[str, Any] = Field(description="the spec as submitted")
    resolved_spec: dict[str, Any] | None = Field(None, description="the spec with every default filled in")
    links: JobLinks

    @classmethod
    def of(cls, job: Job) -> JobOut:
        base = f"/v1/jobs/{job.id}"
        return cls(
            id=job.id, kind=job.kind, state=JobState(job.state), attempt=job.attempt,
            progress=JobProgress.of(job.progress),
            error=job.error, cancel_requested=job.cancel_requested, idempotency_key=job.idempotency_key,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at, spec=job.spec, resolved_spec=job.resolved_spec,
            links=JobLinks(self=base, cancel=f"{base}/cancel", report=f"{base}/report", metrics=f"{base}/metrics"),
        )


class JobPage(BaseModel):
    """A page of jobs, newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[JobOut]
    next_cursor: str | None = None


class MetricSeriesOut(BaseModel):
    """One series; ``points`` are ``[step, value]`` pairs (value null = not a finite number)."""

    layer: int = Field(description="hidden layer index (1-based); 0 = whole network (test_error, …)")
    statistic: str = Field(description="section.field, e.g. activation.std, saturation.fraction, test_error")
    points: list[tuple[int, float | None]]


class MetricsPage(BaseModel):
    """Metric series of a job, at most ``limit`` points per page, ordered by layer, statistic, step."""

    job_id: str
    state: JobState
    series: list[MetricSeriesOut]
    points: int = Field(description="points on this page")
    next_cursor: str | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
