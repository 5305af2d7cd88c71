"""Engines and sessions for SQLite (embedded) and PostgreSQL (psycopg 3).

SQLite gets what it needs to behave under a web server plus a runner writing at the same time: WAL,
a busy timeout, ``foreign_keys=ON``, and pysqlite's own transaction handling turned off so that
SQLAlchemy emits BEGIN itself (the SAVEPOINT fix from the SQLAlchemy SQLite docs). We
begin with ``BEGIN IMMEDIATE``: every transaction takes the write lock up front, so a read-then-write
transaction can never fail with SQLITE_BUSY on upgrade; transactions are kept short everywhere.

Engines are cached per (URL, process id): a forked child (Celery prefork) never reuses its parent's
pooled connections.

PostgreSQL engines survive an outage by themselves: ``pool_pre_ping`` tests a pooled connection before
handing it out (a connection that died in a restart is replaced, not used), a connection attempt gives
up after :data:`PG_CONNECT_TIMEOUT_S` (an unreachable server is an error, not a hang), and TCP
keepalives find a connection whose server vanished mid-query. The errors of an outage are retried by
the writers that must land (``jobs.transient``) and answered 503 by the API.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Seconds a PostgreSQL connection attempt may take before it fails.
PG_CONNECT_TIMEOUT_S = 5
#: libpq TCP keepalives: a peer silent for 10 s is probed every 5 s, and given up after 3 probes.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

_lock = threading.Lock()
_engines: dict[tuple[str, int], Engine] = {}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite: stop emitting BEGIN itself
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for ``url`` (no caching); creates the SQLite file's folder when needed."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if u.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **PG_KEEPALIVES,
                                  **kwargs.get("connect_args", {})}
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def get_engine(url: str) -> Engine:
    """The engine for ``url`` in this process (one per URL and pid)."""
    key = (url, os.getpid())
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_db_engine(url)
        return engine


def dispose_engines() -> None:
    """Close this process's pools (tests, shutdown)."""
    with _lock:
        for (_, pid), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()


def session_factory(url: str) -> sessionmaker[Session]:
    """A sessionmaker bound to this process's engine for ``url``; objects stay usable after commit."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one short transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session
