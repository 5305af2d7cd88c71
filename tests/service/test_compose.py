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
    # api and migrate share the CPU image; the worker has its own, with CUDA torch
    assert services["api"]["image"] == services["migrate"]["image"] == "glorot:latest"
    assert services["worker"]["image"] == "glorot-worker:latest"


_VAR = re.compile(r"^\$\{(\w+):-([^}]+)\}$")


def _default_arg(service: dict[str, Any], arg: str) -> str:
    """A build argument's value as compose resolves it with an empty environment (``${VAR:-default}``)."""
    value = str(service["build"]["args"][arg])
    m = _VAR.match(value)
    return m.group(2) if m else value


def _is_cuda_torch_index(url: str) -> bool:
    """PyTorch's CUDA folders (…/whl/cu128) or PyPI, whose Linux x86-64 torch wheels are CUDA builds
    (torch 2.13.0 depends on the CUDA 13 runtime packages there)."""
    return re.search(r"download\.pytorch\.org/whl/cu\d+/?$", url) is not None or \
        url.rstrip("/") == "https://pypi.org/simple"


def test_worker_image_gets_cuda_torch_and_the_api_cpu_torch_by_default(compose: dict[str, Any]) -> None:
    """The worker reserves a GPU, so its default build must install a CUDA torch (and the Dockerfile
    must fail a build that got a CPU one); the API and migrate services never run jobs: CPU torch."""
    s = compose["services"]
    worker_index = _default_arg(s["worker"], "TORCH_INDEX_URL")
    assert _is_cuda_torch_index(worker_index), worker_index
    assert str(s["worker"]["build"]["args"]["TORCH_REQUIRE_CUDA"]) == "1"
    for name in ("api", "migrate"):
        index = _default_arg(s[name], "TORCH_INDEX_URL")
        assert index.rstrip("/").endswith("/whl/cpu"), (name, index)
        assert not _is_cuda_torch_index(index)
        assert str(s[name]["build"]["args"].get("TORCH_REQUIRE_CUDA", "0")) == "0"
    versions = {str(s[n]["build"]["args"]["TORCH_VERSION"]) for n in ("api", "migrate", "worker")}
    assert len(versions) == 1, "one torch version in both images"
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_REQUIRE_CUDA=0$", dockerfile, re.M)
    # the build-time check: a required CUDA build that is absent fails the RUN that installed torch
    assert re.search(r"TORCH_REQUIRE_CUDA\}' == '1' and torch\.version\.cuda is None", dockerfile)


def test_the_dockerfiles_cuda_check_fails_a_cpu_build() -> None:
    """The Dockerfile's check, run here with this machine's CPU torch: it passes when CUDA is not
    required and fails the build when it is."""
    text = DOCKERFILE.read_text().replace("\\\n", "")
    check = re.search(r'python -c "(import sys, torch;[^"]*)"', text)
    assert check is not None
    code = check.group(1)
    import torch

    for required, fails in (("0", False), ("1", torch.version.cuda is None)):
        res = subprocess.run([sys.executable, "-c", code.replace("${TORCH_REQUIRE_CUDA}", required)],
                             capture_output=True, text=True, timeout=120)
        assert (res.returncode != 0) == fails, (required, res.stdout, res.stderr)


# Flags each `docker compose` subcommand has (Compose v2), and the global ones before the subcommand.
_GLOBAL_FLAGS = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory"}
_FLAGS: dict[str, set[str]] = {
    "up": {"-d", "--detach", "--build", "--no-build", "--wait", "--scale", "--force-recreate", "--no-deps",
           "--remove-orphans", "--pull", "--no-start", "--quiet-pull", "--abort-on-container-exit",
           "-V", "--renew-anon-volumes", "--no-recreate", "-t", "--timeout", "--wait-timeout"},
    "build": {"--build-arg", "--no-cache", "--pull", "--progress", "-q", "--quiet", "--ssh", "--push",
              "--with-dependencies", "-m", "--memory", "--builder", "--check"},
    "run": {"--rm", "-e", "--env", "-d", "--detach", "--name", "--entrypoint", "--no-deps", "-T", "-u",
            "--user", "-v", "--volume", "-w", "--workdir", "-p", "--publish", "--service-ports", "--build",
            "-i", "--interactive", "-t", "--tty", "-l", "--label", "--pull", "--use-aliases", "--quiet-pull"},
    "exec": {"-d", "--detach", "-e", "--env", "-T", "--no-TTY", "-u", "--user", "-w", "--workdir",
             "--index", "--privileged"},
    "down": {"-v", "--volumes", "--remove-orphans", "--rmi", "-t", "--timeout"},
    "logs": {"-f", "--follow", "--tail", "-n", "-t", "--timestamps", "--no-color", "--since", "--until",
             "--no-log-prefix", "--index"},
    "ps": {"-a", "--all", "-q", "--quiet", "--format", "--services", "--status", "--filter"},
    "stop": {"-t", "--timeout"},
    "start": set(),
    "restart": {"-t", "--timeout", "--no-deps"},
    "pull": {"-q", "--quiet", "--ignore-pull-failures", "--include-deps", "--policy"},
    "config": {"-q", "--quiet", "--services", "--volumes", "--format", "--images"},
}
# Subcommands whose first positional argument is a service, after which the words are the container's.
_TAKES_A_COMMAND = {"run", "exec"}
_TAKES_A_VALUE = {"--build-arg", "--progress", "--ssh", "-m", "--memory", "--builder", "--scale", "--pull",
                  "-t", "--timeout", "--wait-timeout", "-e", "--env", "--name", "--entrypoint", "-u", "--user",
                  "-v", "--volume", "-w", "--workdir", "-p", "--publish", "-l", "--label", "--index", "--rmi",
                  "--tail", "-n", "--since", "--until", "--format", "--status", "--filter", "--policy"}


def _documented_compose_commands() -> list[tuple[str, str]]:
    """(file, command) for every ``docker compose …`` in README.md, docs/*.md and the comments of
    docker-compose.yml and the Dockerfile: shell lines and inline code alike."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), COMPOSE, DOCKERFILE]
    out = []
    for path in files:
        text = path.read_text().replace("\\\n", " ")
        for m in re.finditer(r"docker compose\b[^`#;|&\n)]*", text):
            out.append((path.name, m.group(0).strip()))
    return out


def test_documented_compose_commands_use_flags_that_exist(compose: dict[str, Any]) -> None:
    """``docker compose up --build-arg …`` does not exist (only ``build`` has ``--build-arg``): every
    compose command in the docs uses a real subcommand, flags that subcommand has, and real services."""
    services = set(compose["services"])
    checked = 0
    for where, cmd in _documented_compose_commands():
        words = shlex.split(cmd.replace("…", ""))[2:]
        if not words:
            continue  # the phrase "docker compose …" in prose, not a command
        while words[0].startswith("-"):
            flag = words.pop(0)
            assert flag.split("=", 1)[0] in _GLOBAL_FLAGS, f"{where}: `{cmd}`: unknown global flag {flag}"
            if "=" not in flag:
                words.pop(0)  # every global flag takes a value
        sub, args = words[0], words[1:]
        assert sub in _FLAGS, f"{where}: `{cmd}`: subcommand {sub!r} not in the allow-list"
        positional = []
        skip = False
        for word in args:
            if skip:
                skip = False
                continue
            if word.startswith("-"):
                flag = word.split("=", 1)[0]
                assert flag in _FLAGS[sub], f"{where}: `{cmd}`: docker compose {sub} has no {flag}"
                skip = flag in _TAKES_A_VALUE and "=" not in word
                continue
            positional.append(word)
            if sub in _TAKES_A_COMMAND:
                break  # the service; the rest is the container's command
        for name in positional:
            assert name in services, f"{where}: `{cmd}`: no service {name!r}"
        if sub in _TAKES_A_COMMAND:
            assert positional, f"{where}: `{cmd}`: names no service"
        checked += 1
    assert checked >= 5


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
