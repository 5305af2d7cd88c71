"""SQLAlchemy 2 models: the database is the truth about every job (docs/architecture.md).

Tables: tenants, api_keys (HMAC hashes only), jobs, reports + report_parts (serialised JSON in pieces), metric_series +
metric_points (narrow keys: a point is (series_id, step) → value, written in batches). The schema is
made only by Alembic (migrations/); a test checks that the migrations and these models agree.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive text: we add UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobState(enum.StrEnum):
    """QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED; terminal states never change."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

#: The state column: VARCHAR(16) with a CHECK constraint (``ck_jobs_state``) on every backend rather
#: than a native PostgreSQL enum type, so SQLite and PostgreSQL share one migration path and adding a
#: state later is a constraint change, not an ``ALTER TYPE``. Rows read back as :class:`JobState`.
JobStateType = Enum(JobState, name="state", native_enum=False, length=16, create_constraint=True,
                    validate_strings=True, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """An API key, stored only as HMAC-SHA256(server secret, key); ``prefix`` identifies it to humans."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Job(Base):
    """One unit of work. ``attempt`` is the fencing token: a runner writes only while its attempt is current."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("attempt >= 0", name="attempt"),
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_state_heartbeat", "state", "heartbeat_at"),
        Index("ix_jobs_state_dispatched", "state", "dispatched_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), default="experiment")
    state: Mapped[JobState] = mapped_column(JobStateType, default=JobState.QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    resolved_spec: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Report(Base):
    """The JSON report of a SUCCEEDED job, written by the attempt that produced it. Its bytes are the
    ``report_parts`` rows (jobs/reports.py); this row says how they frame into the report: the section
    names in order, the snapshot count (None: ``snapshots`` is not stored an element per part), and the
    size and sha256 of the compact JSON they make."""

    __tablename__ = "reports"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    sections: Mapped[list[str]] = mapped_column(JSONType)
    snapshots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReportPart(Base):
    """Piece ``seq`` (0, 1, …) of a report: (part of) the compact JSON of section ``section``'s value, or
    of snapshot ``snapshot`` of the ``snapshots`` list; at most 64 KiB, read back in order."""

    __tablename__ = "report_parts"

    job_id: Mapped[str] = mapped_column(ForeignKey("reports.job_id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    section: Mapped[str] = mapped_column(String(200))
    snapshot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MetricSeries(Base):
    """One (job, layer, statistic) series; layer 0 holds whole-network statistics such as test_error."""

    __tablename__ = "metric_series"
    __table_args__ = (UniqueConstraint("job_id", "layer", "statistic"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    layer: Mapped[int] = mapped_column(Integer)
    statistic: Mapped[str] = mapped_column(String(64))


class MetricPoint(Base):
    """A point of a series, keyed narrowly by (series_id, step). NULL value = NaN (SQLite cannot store NaN)."""

    __tablename__ = "metric_points"

    series_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("metric_series.id", ondelete="CASCADE"),
        primary_key=True,
    )
    step: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)


# ------------------------------------------------------------------------------------------ uploads


class Blob(Base):
    """An uploaded file of a tenant, content-addressed by sha256 (one row per (tenant, sha256)); its bytes
    are the ``blob_chunks`` rows, so every worker on any machine reads it from the database."""

    __tablename__ = "blobs"
    __table_args__ = (UniqueConstraint("tenant_id", "sha256"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BlobChunk(Base):
    """Chunk ``seq`` (0, 1, …) of a blob: a blob is read back in order, a chunk at a time."""

    __tablename__ = "blob_chunks"

    blob_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                         ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class UploadedModel(Base):
    """A model a tenant uploaded: its blob, format, the metadata it was declared with and its probe points."""

    __tablename__ = "uploaded_models"
    __table_args__ = (Index("ix_uploaded_models_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    blob_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), ForeignKey("blobs.id"))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    format: Mapped[str] = mapped_column(String(32))
    declared: Mapped[dict[str, Any]] = mapped_column(JSONType)
    info: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UploadedData(Base):
    """Probe inputs a tenant uploaded (``.npz``): its blob and the arrays' shapes and dtypes."""

    __tablename__ = "uploaded_data"
    __table_args__ = (Index("ix_uploaded_data_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    blob_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), ForeignKey("blobs.id"))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# ------------------------------------------------------------------------------------------- suites


class Suite(Base):
    """A multi-seed suite (docs/suites.md): configurations × seeds, one child job each.

    ``configs`` holds, per configuration, the body it was given as (a spec, or a preset body), its label,
    preset and budget (None for a plain spec) and the paper's Table 1 test error in % when the preset has
    one; ``seeds`` the seeds of each configuration (a list per configuration; JSON, since a seed is an
    unsigned 64-bit word that no portable integer column holds). The children are ``suite_children``
    rows; a suite's state is derived from theirs, never stored."""

    __tablename__ = "suites"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_suites_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    configs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    seeds: Mapped[list[list[int]]] = mapped_column(JSONType)
    children_expected: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SuiteChild(Base):
    """Child ``position`` of a suite: the job of configuration ``config_index`` with seed number
    ``seed_index`` (its seed is ``suites.seeds[config_index][seed_index]``)."""

    __tablename__ = "suite_children"

    suite_id: Mapped[str] = mapped_column(ForeignKey("suites.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    config_index: Mapped[int] = mapped_column(Integer)
    seed_index: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
