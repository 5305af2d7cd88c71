"""API keys through the real ``glorot keys`` commands on both databases: create, list (never the key
itself), revoke, and a revoked key answering 401 from the API."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient
from service_support import SECRET, auth, new_key

GLOROT = [sys.executable, "-m", "glorot_core.cli"]


def _keys(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOROT_")}
    env.update({"GLOROT_DATABASE_URL": db_url, "GLOROT_API_KEY_SECRET": SECRET, "GLOROT_AUTO_MIGRATE": "0"})
    return subprocess.run([*GLOROT, "keys", *args], capture_output=True, text=True, env=env, timeout=120)


def test_list_shows_prefixes_never_keys_and_revoke_locks_the_key_out(
    idle_client: TestClient, factory: Any, settings: Any, db_url: str
) -> None:
    created = _keys(db_url, "create", "--tenant", "acme")
    assert created.returncode == 0, created.stderr
    cli_key = created.stdout.strip().splitlines()[-1]
    other = new_key(factory, settings, "globex")
    assert idle_client.get("/v1/jobs", headers=auth(cli_key)).status_code == 200

    listing = _keys(db_url, "list")
    assert listing.returncode == 0, listing.stderr
    assert cli_key not in listing.stdout and other not in listing.stdout
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    acme = next(r for r in rows if r[1] == "acme")
    assert cli_key.startswith(acme[2]) and acme[-1] == "-"
    assert [r[1] for r in rows if r[1] in ("acme", "globex")] == ["acme", "globex"]
    only = _keys(db_url, "list", "--tenant", "globex")
    assert [line.split()[1] for line in only.stdout.splitlines()[1:]] == ["globex"]

    revoked = _keys(db_url, "revoke", acme[0])
    assert revoked.returncode == 0 and "revoked key" in revoked.stdout, revoked.stderr
    r = idle_client.get("/v1/jobs", headers=auth(cli_key))  # the test settings cache no keys
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert idle_client.get("/v1/jobs", headers=auth(other)).status_code == 200

    again = _keys(db_url, "revoke", acme[0])
    assert again.returncode == 1 and "no live key" in again.stderr
    assert _keys(db_url, "revoke", "999999").returncode == 1
    after = next(line.split() for line in _keys(db_url, "list").stdout.splitlines()[1:] if line.split()[0] == acme[0])
    assert after[-1] != "-"
