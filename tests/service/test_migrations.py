"""Alembic is the only way the schema is made: upgrade and downgrade on both databases, and the
migrations agree with the SQLAlchemy models (nothing left for autogenerate to find)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from service_support import create_pg_database, drop_pg_database
from sqlalchemy import inspect

from jobs.db import create_db_engine
from jobs.migrate import current_revision, downgrade, head_revision, upgrade
from jobs.models import Base

TABLES = {"tenants", "api_keys", "jobs", "reports", "report_parts", "metric_series", "metric_points", "blobs",
          "blob_chunks", "uploaded_models", "uploaded_data", "suites", "suite_children"}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    url = create_pg_database("glorot_migr")
    try:
        yield url
    finally:
        drop_pg_database(url)


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_db: str) -> None:
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    assert _tables(empty_db) == TABLES
    downgrade(empty_db, "base")
    assert current_revision(empty_db) is None
    assert _tables(empty_db) == set()
    upgrade(empty_db)
    assert _tables(empty_db) == TABLES


def test_migrations_match_models(empty_db: str) -> None:
    upgrade(empty_db)
    engine = create_db_engine(empty_db)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_constraint_names_follow_the_convention(empty_db: str) -> None:
    upgrade(empty_db)
    engine = create_db_engine(empty_db)
    try:
        insp = inspect(engine)
        fks = {fk["name"] for fk in insp.get_foreign_keys("jobs")}
        uqs = {uq["name"] for uq in insp.get_unique_constraints("jobs")}
    finally:
        engine.dispose()
    assert "fk_jobs_tenant_id_tenants" in fks
    assert "uq_jobs_tenant_id_idempotency_key" in uqs
