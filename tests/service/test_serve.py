"""End to end over real HTTP: ``glorot keys create`` and ``glorot serve`` as subprocesses (uvicorn, a
temp SQLite file, the local runner with each job in a spawned process), driven by the httpx client and
the ``glorot submit/status/report`` commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import LONG_SPEC, TINY_SPEC, check_design_report, wait_for

from api.client import GlorotClient

GLOROT = [sys.executable, "-m", "glorot_core.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOROT_")}
    env.update({"GLOROT_HOME": str(home), "GLOROT_LOCAL_RUNNER_ISOLATION": "process",
                "GLOROT_HEARTBEAT_INTERVAL_S": "0.5", "GLOROT_PROGRESS_INTERVAL_S": "0.3",
                "GLOROT_LOCAL_POLL_INTERVAL_S": "0.5", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("serve")
    env = _env(home / "var")
    out = subprocess.run([*GLOROT, "keys", "create", "--tenant", "acme"], env=env, cwd=home,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("glk_")
    port = _free_port()
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen([*GLOROT, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=home,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _health(url), lambda ok: ok or proc.poll() is not None, timeout=60, poll=0.2)
        assert proc.poll() is None, (home / "serve.log").read_text()
        yield {"url": url, "key": key, "env": {**env, "GLOROT_URL": url, "GLOROT_API_KEY": key}, "home": home,
               "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_submit_running_succeeded_report(server: dict[str, Any]) -> None:
    assert (server["home"] / "var" / "glorot.sqlite3").exists()
    with GlorotClient(server["url"], server["key"]) as c:
        job = c.submit(TINY_SPEC)
        assert job["state"] == "QUEUED"
        states: list[str] = []
        job = c.wait(job["id"], poll_s=0.1, timeout_s=180, on_update=lambda j: states.append(j["state"]))
        assert "RUNNING" in states, states
        assert job["state"] == "SUCCEEDED", (job["error"], (server["home"] / "serve.log").read_text()[-3000:])
        check_design_report(c.report(job["id"]), TINY_SPEC)
        assert c.metrics(job["id"], layer=[1], statistic=["saturation.fraction"])["points"] == 3
        ready = httpx.get(f"{server['url']}/readyz").json()
        assert ready["checks"]["local_runner"] == "ok"


def test_cancel_over_http_frees_the_runner(server: dict[str, Any]) -> None:
    with GlorotClient(server["url"], server["key"]) as c:
        job = c.submit(LONG_SPEC)
        wait_for(lambda: c.job(job["id"]), lambda j: j["state"] == "RUNNING" and j["progress"]["step"] > 0,
                 timeout=120, poll=0.2)
        assert c.cancel(job["id"])["cancel_requested"] is True
        done = c.wait(job["id"], poll_s=0.2, timeout_s=30)
        assert done["state"] == "CANCELLED"
        nxt = c.wait(c.submit({**TINY_SPEC, "train": {"steps": 0}})["id"], poll_s=0.2, timeout_s=120)
        assert nxt["state"] == "SUCCEEDED", nxt["error"]


def test_cli_submit_wait_status_report(server: dict[str, Any], tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**TINY_SPEC, "train": {"steps": 10}}))
    run = subprocess.run([*GLOROT, "submit", str(spec), "--wait", "--poll", "0.2"], env=server["env"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["state"] == "SUCCEEDED"
    assert "%" in run.stderr  # the progress bar
    status = subprocess.run([*GLOROT, "status", result["id"]], env=server["env"], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "SUCCEEDED"
    out = tmp_path / "report.json"
    rep = subprocess.run([*GLOROT, "report", result["id"], "-o", str(out)], env=server["env"], capture_output=True,
                         text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert json.loads(out.read_text())["schema_version"] == 1
    missing = subprocess.run([*GLOROT, "status", "nope"], env=server["env"], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"hidden": [0]}}))
    invalid = subprocess.run([*GLOROT, "submit", str(bad)], env=server["env"], capture_output=True, text=True,
                             timeout=60)
    assert invalid.returncode == 1 and "model.hidden.0" in invalid.stderr
