"""Job start overhead: tiny diagnoses submitted at once, in both execution modes.

Each mode gets a warm-up job (it starts the fork server, the worker's first process, the API's
caches), then ``--jobs`` tiny jobs (``train.steps`` 0, hidden [64]×3, Jacobian off: a diagnosis at
initialisation, the common job) POSTed at once to a real API:

* ``local``: ``glorot serve`` on SQLite, no broker: the embedded local runner (one slot);
* ``celery``: uvicorn on a throw-away PostgreSQL database, one real ``glorot worker`` on the real
  Redis (concurrency 1).

Wall = the last job's ``finished_at`` minus the moment the first POST was sent (one machine clock).
Printed per mode: jobs/s, wall per job, the mean of the reports' ``end.elapsed_s`` (the job's own
work), and **overhead per job = wall per job − mean elapsed_s** (target ≤ 0.15 s). Two parts of it
are printed too: ``in_job`` (median of finished_at − started_at − elapsed_s: the job's process
before and after its work, its database writes included) and ``gap`` (median of the next job's
started_at − this job's finished_at: noticing the end and starting the next job's process).

Run: ``.venv/bin/python benchmarks/bench_job_start.py [--jobs 50] [--modes local,celery]``
(Celery mode needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379, like the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import select

sys.path.insert(0, os.path.dirname(__file__))
from _service import ROOT, api_server, celery_worker, free_port, served, stack

from jobs import reports
from jobs.db import dispose_engines, session_factory
from jobs.models import Job, Report

#: A diagnosis at initialisation: no training step, no Jacobian (the issue's "tiny diagnosis").
TINY_DIAGNOSIS = {"model": {"hidden": [64, 64, 64]}, "train": {"steps": 0},
                  "diagnostics": {"jacobian": {"mode": "off"}}}  # fmt: skip
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
TARGET_OVERHEAD_S = 0.15


@dataclass
class Result:
    mode: str
    jobs: int
    wall_s: float
    mean_elapsed_s: float
    in_job_s: float
    gap_s: float
    failed: int

    @property
    def overhead_s(self) -> float:
        return self.wall_s / self.jobs - self.mean_elapsed_s

    def line(self) -> str:
        return (f"{self.mode:7s} jobs {self.jobs}  jobs_per_s {self.jobs / self.wall_s:.2f}  "
                f"wall_per_job_s {self.wall_s / self.jobs:.3f}  mean_elapsed_s {self.mean_elapsed_s:.3f}  "
                f"in_job_s {self.in_job_s:.3f}  gap_s {self.gap_s:.3f}  failed {self.failed}  "
                f"overhead_per_job_s {self.overhead_s:.3f} (target <= {TARGET_OVERHEAD_S})")  # fmt: skip


@contextlib.contextmanager
def local_server() -> Iterator[tuple[str, str, str]]:
    """``glorot serve`` on a fresh SQLite home; yields (base URL, API key, database URL)."""
    home = Path(tempfile.mkdtemp(prefix="glorot-bench-local-"))
    env = {**os.environ, "GLOROT_HOME": str(home), "GLOROT_API_KEY_SECRET": "bench-secret-" + "x" * 32}
    for name in ("GLOROT_DATABASE_URL", "GLOROT_BROKER_URL"):
        env.pop(name, None)
    cli = [sys.executable, "-m", "glorot_core.cli"]
    out = subprocess.run([*cli, "keys", "create", "--tenant", "bench"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    key = out.stdout.strip().splitlines()[-1].strip()
    port = free_port()
    cmd = [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    try:
        with served(cmd, port, env, home / "serve.log", start_timeout_s=90, stop_timeout_s=20) as base:
            yield base, key, f"sqlite:///{(home / 'glorot.sqlite3').as_posix()}"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _submit(http: httpx.Client, key: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        r = http.post("/v1/experiments", json=TINY_DIAGNOSIS, headers={"Authorization": f"Bearer {key}"})
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


def _wait_terminal(db_url: str, ids: list[str], timeout_s: float) -> None:
    factory = session_factory(db_url)
    deadline = time.monotonic() + timeout_s
    while True:
        with factory() as s:
            left = s.execute(select(Job.id).where(Job.id.in_(ids), Job.state.not_in(TERMINAL))).scalars().all()
        if not left:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(left)} job(s) not finished after {timeout_s:g} s")
        time.sleep(0.1)


def measure(mode: str, base: str, key: str, db_url: str, n: int, timeout_s: float) -> Result:
    """Warm up with one job, then submit ``n`` at once and wait for them all."""
    with httpx.Client(base_url=base, timeout=30) as http:
        _wait_terminal(db_url, _submit(http, key, 1), timeout_s)
        sent = datetime.now(UTC)
        ids = _submit(http, key, n)
        _wait_terminal(db_url, ids, timeout_s)
    factory = session_factory(db_url)
    with factory() as s:
        rows = s.execute(select(Job.id, Job.state, Job.started_at, Job.finished_at).where(Job.id.in_(ids))).all()
        done_ids = s.execute(select(Report.job_id).where(Report.job_id.in_(ids))).scalars().all()
        bodies = {jid: reports.load(s, jid) for jid in done_ids}
    elapsed = {jid: float(body["end"]["elapsed_s"]) for jid, body in bodies.items()}
    done = sorted((r for r in rows if r.started_at and r.finished_at), key=lambda r: r.started_at)
    in_job = [(r.finished_at - r.started_at).total_seconds() - elapsed[r.id] for r in done if r.id in elapsed]
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(done)]
    wall = (max(r.finished_at for r in done) - sent).total_seconds()
    return Result(mode=mode, jobs=n, wall_s=wall, mean_elapsed_s=statistics.fmean(elapsed.values()),
                  in_job_s=statistics.median(in_job), gap_s=statistics.median(gaps) if gaps else 0.0,
                  failed=sum(r.state != "SUCCEEDED" for r in rows))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--modes", default="local,celery", help="comma-separated: local, celery")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for a batch")
    args = ap.parse_args()
    results = []
    for mode in args.modes.split(","):
        if mode == "local":
            with local_server() as (base, key, db_url):
                results.append(measure(mode, base, key, db_url, args.jobs, args.timeout))
        elif mode == "celery":
            with stack() as st, api_server(st) as base, celery_worker(st):
                results.append(measure(mode, base, st.key, st.url, args.jobs, args.timeout))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        dispose_engines()
        print(results[-1].line(), flush=True)
    return 0 if all(r.failed == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
