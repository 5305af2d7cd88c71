"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here).

Statically: the services, their commands, healthchecks, start order (depends_on conditions), the GPU
reservation, and that every ``GLOROT_*`` variable is a field of the settings class (a typo there would
be silently ignored by pydantic-settings). Natively: the same commands run on this machine where they
can (``glorot db upgrade`` against a fresh Postgres database, the services' healthchecks).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def test_services_and_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "worker", "postgres", "redis", "migrate"} <= set(services)
    for name in ("api", "worker", "migrate"):
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"] == "glorot:latest"  # one image, built once


def test_every_glorot_variable_is_a_settings_field(compose: dict[str, Any]) -> None:
    from jobs.settings import Settings

    fields = set(Settings.model_fields)
    seen = 0
    for name, service in compose["services"].items():
        for var in _env(service):
            if var.startswith("GLOROT_"):
                seen += 1
                assert var.removeprefix("GLOROT_").lower() in fields, f"{name}: {var} is not a Settings field"
    assert seen >= 10
    for name in ("api", "worker", "migrate"):
        env = _env(compose["services"][name])
        assert env["GLOROT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["GLOROT_DATABASE_URL"].split("@", 1)[1].startswith("postgres:5432/")
        assert env["GLOROT_BROKER_URL"].startswith("redis://redis:6379/")


def test_the_compose_settings_validate_and_give_a_safe_celery_config(compose: dict[str, Any]) -> None:
    """The worker's environment builds valid Settings, and its Redis visibility timeout exceeds the
    hard time limit (else a long job is delivered again while it runs)."""
    from jobs.settings import Settings
    from worker.celery_app import celery_config

    env = {k.removeprefix("GLOROT_").lower(): v for k, v in _env(compose["services"]["worker"]).items()}
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
    conf = celery_config(settings)
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1 and conf["worker_concurrency"] == 1
    # each job runs in its own process forked by the long-lived pool process (worker.tasks.run_job)
    assert conf["worker_max_tasks_per_child"] is None and conf["worker_pool"] == "worker.pool:PromptTaskPool"
    assert conf["result_backend"] is None and conf["task_ignore_result"]


def test_start_order_and_healthchecks(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for name in ("postgres", "redis", "api", "worker"):
        hc = s[name]["healthcheck"]
        assert hc["test"][0] in {"CMD", "CMD-SHELL"} and not hc.get("disable"), name
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = s[name]["depends_on"]
        # Migrations before the API (and the worker) start: the schema is made only by Alembic.
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
    assert s["migrate"].get("restart") == "no"


def test_commands_are_real_glorot_commands(compose: dict[str, Any]) -> None:
    """The commands the images run (ENTRYPOINT glorot) parse with the real ``glorot`` parser."""
    from glorot_core.cli import build_parser

    s = compose["services"]
    assert _command(s["migrate"]) == ["db", "upgrade"]
    assert _command(s["api"])[0] == "serve"
    assert _command(s["worker"])[0] == "worker"
    parser = build_parser()
    for name in ("migrate", "api", "worker"):
        args = parser.parse_args(_command(s[name]))
        assert callable(args.func), name
    worker_args = parser.parse_args(_command(s["worker"]))
    assert worker_args.concurrency == 1  # one job per GPU


def test_worker_reserves_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    dev = devices[0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    assert dev.get("device_ids") == ["0"] or dev.get("count") == 1
    # The worker's healthcheck pings its own node name.
    name = _command(compose["services"]["worker"])
    node = name[name.index("--name") + 1]
    assert f"{node}@" in " ".join(compose["services"]["worker"]["healthcheck"]["test"])


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=", text, re.M) and re.search(r"^ARG TORCH_VERSION=", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in {"root", "0"}, "the image must not run as root"
    assert re.search(r'^ENTRYPOINT \["glorot"\]', text, re.M)
    for src in re.findall(r"^COPY\s+(?!--)(\S+)", text, re.M):
        assert (ROOT / src).exists() or src == "README.md", f"COPY {src}: missing"


# ----------------------------------------------------------------------- the same commands, natively


@pytest.mark.integration
def test_migrate_command_natively_against_postgres(compose: dict[str, Any], tmp_path: Path) -> None:
    """``glorot db upgrade`` (the migrate service) with the compose environment, pointed at a fresh
    local database instead of the ``postgres`` container."""
    sys.path.insert(0, os.path.dirname(__file__))
    import psycopg
    from celery_support import PG_ADMIN_URL, services_or_fail

    services_or_fail()
    name = f"glorot_compose_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {**os.environ, **_env(compose["services"]["migrate"])}
        env["GLOROT_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        env["GLOROT_BROKER_URL"] = "redis://127.0.0.1:6379/11"
        env["GLOROT_HOME"] = str(tmp_path)
        cmd = [sys.executable, "-m", "glorot_core.cli", *_command(compose["services"]["migrate"])]
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}") as conn:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        from jobs.migrate import head_revision

        assert version is not None and version[0] == head_revision()
        assert {"jobs", "tenants", "api_keys", "reports"} <= tables
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.integration
def test_service_healthchecks_natively(compose: dict[str, Any]) -> None:
    """The postgres and redis healthchecks' programs answer on this machine's services."""
    pg = compose["services"]["postgres"]["healthcheck"]["test"]
    assert pg[0] == "CMD-SHELL" and pg[1].startswith("pg_isready")
    res = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    rd = compose["services"]["redis"]["healthcheck"]["test"]
    res = subprocess.run([rd[1], "-h", "127.0.0.1", "-p", "6379", *rd[2:]], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "PONG", res.stdout + res.stderr
