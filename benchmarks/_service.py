"""Shared set-up for the service benchmarks: a throw-away Postgres database, an API key, a real uvicorn
server (one worker process) and real Celery workers, all on loopback, plus a ``wrk`` runner.

Not a test helper: nothing here asserts. Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust)
and Redis on 127.0.0.1:6379, like the integration tests; ``wrk`` (Debian package ``wrk``) for load.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER_DB = 13  # a Redis DB of the benchmarks' own, and a private queue name in it
# A job small enough that the benchmarks measure the service, not the science.
TINY_SPEC = {"model": {"hidden": [16, 16]}, "train": {"steps": 20}, "diagnostics": {"every": 10, "monitor_examples": 50,
        "jacobian": {"examples": 4}}, "data": {"test_examples": 200}}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """One benchmark's environment: its database URL, queue, API key and ``GLOROT_*`` variables."""

    url: str
    queue: str
    home: Path
    env: dict[str, str]
    key: str = ""


@contextlib.contextmanager
def stack(**extra: str) -> Iterator[Stack]:
    """A fresh migrated database, a private queue, an API key; dropped/deleted afterwards."""
    from jobs.migrate import upgrade

    name = f"glorot_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    home = Path(tempfile.mkdtemp(prefix="glorot-bench-"))
    queue = f"glorot-bench-{uuid.uuid4().hex[:8]}"
    env = {
        "GLOROT_DATABASE_URL": url,
        "GLOROT_BROKER_URL": f"redis://127.0.0.1:6379/{BROKER_DB}",
        "GLOROT_CELERY_QUEUE": queue,
        "GLOROT_HOME": str(home),
        "GLOROT_API_KEY_SECRET": "bench-secret-" + "x" * 32,
        "GLOROT_AUTO_MIGRATE": "false",
        # throughput benchmarks drive one tenant flat out: no per-tenant rate limit or active-job cap
        "GLOROT_TENANT_RATE_PER_S": "0",
        "GLOROT_TENANT_MAX_ACTIVE_JOBS": "0",
        **extra,
    }
    try:
        upgrade(url)
        st = Stack(url=url, queue=queue, home=home, env=env)
        st.key = _make_key(st)
        yield st
    finally:
        from jobs.db import dispose_engines

        dispose_engines()
        with contextlib.suppress(Exception):
            redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB).delete(queue)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)


def _make_key(st: Stack) -> str:
    """``glorot keys create --tenant bench``: the key is the last line printed."""
    cmd = [sys.executable, "-m", "glorot_core.cli", "keys", "create", "--tenant", "bench"]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **st.env}, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].strip()


@contextlib.contextmanager
def served(cmd: list[str], port: int, env: dict[str, str], log_path: Path, *, start_timeout_s: float = 60,
           stop_timeout_s: float = 15) -> Iterator[str]:
    """Run the server ``cmd`` (listening on ``port``, output to ``log_path``) until it answers /healthz;
    yield its base URL; terminate it (then kill) on exit."""
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[2:4]} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(stop_timeout_s)
        if proc.poll() is None:
            proc.kill()
        log.close()


@contextlib.contextmanager
def api_server(st: Stack, app: str = "glorot_service.app:build_app", factory: bool = True) -> Iterator[str]:
    """uvicorn with ONE worker process serving ``app``; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--log-level", "warning", "--no-access-log"]  # fmt: skip
    if factory:
        cmd.append("--factory")
    with served(cmd, port, {**os.environ, **st.env, "PYTHONPATH": str(ROOT)}, st.home / f"api-{port}.log") as base:
        yield base


@contextlib.contextmanager
def celery_worker(st: Stack, name: str = "bench") -> Iterator[Path]:
    """A real ``glorot worker`` (its own process group); yields its log path once it is ready."""
    log_path = st.home / f"worker-{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "glorot_core.cli", "worker", "--name", name],
                            cwd=ROOT, env={**os.environ, **st.env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        log.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, *, connections: int, seconds: float, threads: int = 2, headers: dict[str, str] | None = None,
        script: str | None = None) -> dict[str, float]:  # fmt: skip
    """Run ``wrk --latency``; returns requests/s, p50/p99 latency (ms), requests and non-2xx/3xx count."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script or "")
    if script:
        cmd += ["-s", f.name]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    res = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    }
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["bad"] = float(bad.group(1)) if bad else 0.0
    errs = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = float(sum(int(n) for n in re.findall(r"\d+", errs.group(1)))) if errs else 0.0
    return res
