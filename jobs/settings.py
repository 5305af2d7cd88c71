"""Service settings, read from the environment (prefix ``GLOROT_``) and an optional ``.env`` file.

With no settings at all the service runs in the *embedded* mode: a SQLite file under ``home``
(``GLOROT_HOME``; not ``GLOROT_DATA_DIR``, where glorot_core looks for data sets) and a local runner
inside ``glorot serve``. Setting ``GLOROT_DATABASE_URL`` (postgresql+psycopg://…) and
``GLOROT_BROKER_URL`` (redis://…) switches to Postgres + Celery workers. docs/service.md has the table.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from glorot_core.spec import DEFAULT_MAX_PARAMETERS


class Settings(BaseSettings):
    """Every knob of the service. Durations are in seconds, sizes in bytes."""

    model_config = SettingsConfigDict(env_prefix="GLOROT_", env_file=".env", extra="ignore")

    home: Path = Field(Path("var"), description="folder of the embedded SQLite file and the generated secret")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<home>/glorot.sqlite3 (postgresql:// means psycopg 3)"
    )
    broker_url: str | None = Field(None, description="Celery broker (redis://…); unset → the embedded local runner")
    celery_queue: str = Field("glorot", min_length=1, description="the Celery queue jobs are sent to")
    api_key_secret: SecretStr | None = Field(
        None, description="HMAC secret for API-key hashes and page tokens; unset → generated into <home>/secret"
    )
    max_parameters: int = Field(DEFAULT_MAX_PARAMETERS, ge=1, description="cap on a spec's parameter count")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest JSON request body, counted while streaming")
    max_attempts: int = Field(2, ge=1, le=100, description="runs of a job before the reaper gives up on it")
    job_soft_time_limit_s: float = Field(6 * 3600, gt=0, description="a job past this is stopped and FAILED")
    job_hard_time_limit_s: float = Field(6 * 3600 + 600, gt=0, description="a job's process is killed past this")
    heartbeat_interval_s: float = Field(5.0, gt=0, description="how often a running job's heartbeat is written")
    db_retry_s: float = Field(
        120.0, ge=0, description="a worker retries its job's writes (claim, results, end state) on transient database "
        "errors this long, longer than a database restart; the reaper waits reaper_stale_after_s after it regains "
        "the database before it reaps (docs/service.md, Outages)",
    )
    reaper_stale_after_s: float = Field(60.0, gt=0, description="RUNNING with an older heartbeat → worker is dead")
    reaper_interval_s: float = Field(15.0, gt=0, description="how often the reaper (and sweeper) look")
    sweeper_queued_after_s: float = Field(120.0, gt=0, description="QUEUED this long unclaimed → dispatched again")
    progress_interval_s: float = Field(1.0, ge=0, description="progress is written at most this often")
    cancel_poll_interval_s: float = Field(0.5, gt=0, description="how often a running job looks at cancel_requested")
    cancel_grace_s: float = Field(30.0, gt=0, description="local runner: kill a job ignoring a cancel after")
    local_runner: bool = Field(True, description="`glorot serve` without a broker runs jobs itself")
    local_runner_isolation: Literal["process", "thread"] = Field(
        "process", description="local runner: each job in a spawned subprocess (safe) or a thread (tests, debugging)"
    )
    local_runner_concurrency: int = Field(1, ge=1, le=64, description="jobs the local runner runs at once")
    job_memory_limit_mb: int | None = Field(
        None, ge=256, description="cap on a job process's data segment (RLIMIT_DATA, MiB): a job past it FAILS "
        "with a memory error instead of taking the machine down; unset = no cap. Job processes only (local runner "
        "with process isolation, Celery workers), not thread isolation",
    )
    local_poll_interval_s: float = Field(2.0, gt=0, description="local runner: poll for QUEUED rows this often")
    auto_migrate: bool | None = Field(None, description="`glorot serve` upgrades the schema; default: on for SQLite")
    page_size_default: int = Field(50, ge=1)
    page_size_max: int = Field(200, ge=1)
    metric_points_default: int = Field(5000, ge=1)
    metric_points_max: int = Field(50_000, ge=1)
    auth_cache_ttl_s: float = Field(30.0, ge=0, description="how long a verified API key is cached in memory")
    job_cache_ttl_s: float = Field(
        0.25, ge=0, le=5, description="GET /v1/jobs/{id} responses are cached in memory this long per (tenant, job); "
        "the staleness bound of a poll (0 = off)"
    )
    # --- revocation, per-tenant limits and data roots (docs/service.md, "Tenants: limits and fairness")
    auth_revocation_check_s: float = Field(
        0.5, gt=0, le=5, description="each API process looks at the API-key revocation epoch at most this often and "
        "drops its cached keys when it moved: a revoked key is refused within this interval (plus one query)"
    )
    tenant_max_active_jobs: int = Field(
        1000, ge=0, description="most QUEUED + RUNNING jobs of one tenant; a submission past it is 429 (0 = no cap)"
    )
    tenant_rate_per_s: float = Field(
        100.0, ge=0, description="sustained authenticated requests per second of one tenant, per API process; "
        "past it 429 with Retry-After (0 = no limit)"
    )
    tenant_rate_burst: int = Field(500, ge=1, description="requests a tenant may send at once above the rate")
    data_dir: Path | None = Field(
        None, description="GLOROT_DATA_DIR: the folder whose sub-folders a service spec's data.root names "
        "(the service never reads a path a tenant chose)"
    )
    data_roots: list[str] | None = Field(
        None, description="optional allow-list of the data.root names tenants may use (JSON list); unset = any "
        "folder name under data_dir"
    )

    # --- uploaded models and probe data (docs/uploads.md)
    max_upload_bytes: int = Field(
        1 << 30, ge=1024, description="largest uploaded file (POST /v1/models, /v1/data), counted while streaming"
    )
    tenant_upload_quota_bytes: int = Field(
        10 << 30, ge=0, description="total size of one tenant's stored uploads (a file shared by uploads counts once)"
    )
    upload_chunk_bytes: int = Field(1 << 20, ge=4096, le=64 << 20, description="size of a stored blob chunk row")
    upload_max_entries: int = Field(10_000, ge=1, description="most members of an uploaded zip archive")
    upload_max_uncompressed_bytes: int = Field(
        4 << 30, ge=1024, description="most bytes an uploaded zip archive may inflate to (zip bombs)"
    )
    upload_check_memory_mb: int = Field(4096, ge=256, description="memory cap of the process that checks a model")
    upload_check_timeout_s: float = Field(120.0, gt=0, description="time limit of the process that checks a model")
    @model_validator(mode="after")
    def _limits_ordered(self) -> Settings:
        if self.job_hard_time_limit_s <= self.job_soft_time_limit_s:
            raise ValueError("job_hard_time_limit_s must be greater than job_soft_time_limit_s")
        if self.reaper_stale_after_s <= self.heartbeat_interval_s:
            raise ValueError("reaper_stale_after_s must be greater than heartbeat_interval_s")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with the embedded default and the psycopg 3 driver filled in."""
        url = self.database_url or f"sqlite:///{(self.home / 'glorot.sqlite3').as_posix()}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    def secret_bytes(self) -> bytes:
        """The server secret. Generated once (0600 file in home) when not configured, so the embedded
        default needs no settings yet keys stay valid across restarts."""
        if self.api_key_secret is not None:
            return self.api_key_secret.get_secret_value().encode()
        path = self.home / "secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process won the race; read theirs
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
