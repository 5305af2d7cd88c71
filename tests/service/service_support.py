"""Helpers of the service tests (imported by conftest.py and the test modules): the throwaway
PostgreSQL databases and the specs the tests submit."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from api.services import create_api_key
from jobs.db import transaction
from jobs.settings import Settings

PG_SERVER_URL = os.environ.get("GLOROT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SECRET = "test-secret-not-for-production"

TINY_SPEC: dict[str, Any] = {
    "model": {"hidden": [16, 16]},
    "train": {"steps": 20},
    "diagnostics": {"every": 10, "monitor_examples": 50, "jacobian": {"examples": 4}},
    "data": {"test_examples": 200},
}
#: Long enough to be cancelled while RUNNING (a few hundred steps a second on a busy CPU).
LONG_SPEC: dict[str, Any] = {
    "model": {"hidden": [16, 16]},
    "train": {"steps": 5_000_000},
    "diagnostics": {"every": 1_000_000, "monitor_examples": 20, "jacobian": {"mode": "off"}},
    "data": {"test_examples": 50},
}


def _pg_admin_engine() -> Engine:
    return create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def create_pg_database(prefix: str = "glorot_test") -> str:
    """A fresh database in the Postgres server; returns its URL. Fails loudly if the server is away."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # never skip: the integration tests must fail without their database
        pytest.fail(f"PostgreSQL at {PG_SERVER_URL} is not reachable: {e}", pytrace=False)
    finally:
        engine.dispose()
    return make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    assert name and name.startswith("glorot_"), name  # never drop anything we did not create
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()




def make_settings(db_url: str, home: Path, **overrides: Any) -> Settings:
    """Settings for tests: fast heartbeats and polls, thread isolation unless asked otherwise.

    The reaper's staleness window stays generous (30 s): a job process that is still starting (importing
    torch on a loaded machine) must never look dead. Tests of the reaper age a heartbeat explicitly
    instead of waiting for one to go stale."""
    values: dict[str, Any] = {
        "database_url": db_url, "home": home, "api_key_secret": SECRET, "broker_url": None,
        "heartbeat_interval_s": 0.2, "reaper_stale_after_s": 30.0, "reaper_interval_s": 0.5,
        "progress_interval_s": 0.2, "cancel_poll_interval_s": 0.1, "local_poll_interval_s": 0.2,
        "local_runner_isolation": "thread", "auth_cache_ttl_s": 0, "max_attempts": 2,
    }
    values.update(overrides)
    return Settings(**values)


def new_key(factory: sessionmaker[Session], settings: Settings, tenant: str | None = None) -> str:
    with transaction(factory) as s:
        key, _ = create_api_key(s, tenant or f"t-{secrets.token_hex(3)}", settings.secret_bytes())
    return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for(get: Callable[[], dict[str, Any]], until: Callable[[dict[str, Any]], bool], timeout: float = 120.0,
             poll: float = 0.1) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s; last: {value}")
        time.sleep(poll)


def wait_state(client: TestClient | httpx.Client, key: str, job_id: str, states: set[str],
               timeout: float = 120.0) -> dict[str, Any]:
    return wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json(),
                    lambda j: j["state"] in states, timeout)


def check_design_report(report: dict[str, Any], spec: dict[str, Any]) -> None:
    """The report has the documented sections and, per snapshot and layer, every instrument's fields."""
    assert report["schema_version"] == 1
    for key in ("spec", "layers", "snapshots", "theory", "verdicts"):
        assert key in report, key
    hidden = spec["model"]["hidden"]
    assert [(lay["index"], lay["name"], lay["units"]) for lay in report["layers"]] == [
        (i + 1, f"hidden{i + 1}", w) for i, w in enumerate(hidden)]
    assert all(lay["activation"] == "tanh" for lay in report["layers"])
    snaps = report["snapshots"]
    assert [s["step"] for s in snaps] == [0, 10, 20]
    for snap in snaps:
        for key in ("step", "examples_seen", "test_error", "train_loss", "layers"):
            assert key in snap, key
        assert len(snap["layers"]) == len(hidden)
        for i, lay in enumerate(snap["layers"]):
            assert lay["index"] == i + 1
            act = lay["activation"]
            assert {"mean", "std", "p2", "p98", "histogram"} <= act.keys()
            assert {"edges", "counts"} <= act["histogram"].keys()
            assert {"fraction", "low", "high", "threshold"} <= lay["saturation"].keys()
            assert {"mean", "std", "histogram"} <= lay["backprop_grad"].keys()
            assert {"mean", "std", "histogram"} <= lay["weight_grad"].keys()
            if i < len(hidden) - 1:
                assert {"mean_sv", "mean_sq_sv", "max_sv", "min_sv", "histogram"} <= lay["jacobian"].keys()
            else:
                assert not lay.get("jacobian")  # the last hidden layer has none
    for v in report["verdicts"]:
        assert {"code", "severity", "message"} <= v.keys()
