"""Fixtures of the service tests: every database test runs against BOTH SQLite (a temp file) and the
real PostgreSQL at 127.0.0.1:5432.

On PostgreSQL a throwaway database ``glorot_test_<random>`` is created in the server for the test
session (through the ``postgres`` maintenance database) and dropped at the end; the ``test`` database
is never touched. If PostgreSQL is unreachable the Postgres-parametrised tests FAIL (they never skip):
set ``GLOROT_TEST_PG_URL`` to point them elsewhere.

The schema is made the product's way, by the Alembic migrations (``jobs.migrate.upgrade``). Between
tests every table is emptied.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import create_pg_database, drop_pg_database, make_settings, new_key
from sqlalchemy.orm import Session, sessionmaker

from glorot_service.app import build_app
from jobs.db import dispose_engines, session_factory, transaction
from jobs.migrate import upgrade
from jobs.models import Base
from jobs.settings import Settings


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of each kind, for the whole test session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'glorot.sqlite3'}"
        upgrade(url)
        yield url
        dispose_engines()
        return
    url = create_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        drop_pg_database(url)


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database; every table is emptied after the test."""
    f = session_factory(db_url)
    yield f
    with transaction(f) as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())


@pytest.fixture
def settings(db_url: str, tmp_path: Path, factory: sessionmaker[Session]) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def key(factory: sessionmaker[Session], settings: Settings) -> str:
    return new_key(factory, settings, "acme")


@pytest.fixture
def other_key(factory: sessionmaker[Session], settings: Settings) -> str:
    return new_key(factory, settings, "globex")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its local runner (thread isolation), through Starlette's TestClient."""
    with TestClient(build_app(settings)) as c:
        yield c


@pytest.fixture
def idle_client(settings: Settings) -> Iterator[TestClient]:
    """The app with no runner: jobs stay QUEUED."""
    with TestClient(build_app(settings, start_runner=False)) as c:
        yield c


