"""Faults under a steady stream of small jobs: worker SIGKILLs, a PostgreSQL outage and a Redis
restart, with real Celery workers, PostgreSQL and Redis. Prints a table: jobs lost, stuck, run twice,
re-run needlessly, and the recovery time of each fault.

* **Stream**: a job every ``--interval`` s (a small network for ``--steps`` steps), committed straight
  to the database and published to the broker like the API does (a failed publish leaves the job
  QUEUED for the sweeper, as in the API).
* **SIGKILLs** (``--kills``): the whole process group of a worker running a job (parent, pool,
  maintenance), restarted at once. Recovery: from the kill until its job is claimed again (attempt + 1)
  or settled.
* **PostgreSQL outage** (``--pg-outage`` s): the workers reach the database through a TCP proxy that
  is cut (every connection dropped, new ones turned away) and restored; ``--real-restarts`` instead
  runs ``pg_ctlcluster <version> main restart`` (disrupts everything using that server). Recovery:
  from the restore until the first job is claimed or finished (work resumes).
* **Redis restart** (``--redis-outage`` s): the workers reach Redis through a proxy; it is cut and the
  queue deleted (what a restart without persistence does to it), then restored; ``--real-restarts``
  instead shuts the real Redis down without saving and starts it again. Recovery: from the restore
  until every job left QUEUED has a message again or has been claimed.

Keep the stream below the workers' capacity (``--interval`` above a job's duration / ``--workers``),
or the backlog, not the faults, decides how long the drain takes.

At the end the stream stops and every job is waited for (``--drain`` s). **lost**: a job that ended
FAILED (all jobs here are healthy); **stuck**: not finished after the drain; **run twice**: attempts
> 1; **re-run needlessly**: attempts > 1 for a job no kill hit.

Run: ``.venv/bin/python benchmarks/bench_faults.py`` (the lead's figures); a quick check:
``--kills 2 --pg-outage 5 --redis-outage 3 --workers 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))
from celery_support import (
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    TERMINAL,
    TINY_SPEC,
    Env,
    Worker,
    fresh_database,
    make_tenant,
    publish,
    redis_restarted,
    services_or_fail,
)
from tcp_proxy import TcpProxy


@dataclass
class Fault:
    name: str
    recoveries: list[float] = field(default_factory=list)
    victims: set[str] = field(default_factory=set)


@dataclass
class Run:
    factory: Any
    client: Any
    tenant: int
    spec: dict[str, Any]
    jobs: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stream(self, interval: float) -> None:
        """What the API does per submission: commit a QUEUED row, then publish; a failed publish is
        left to the sweeper."""
        from jobs.models import Job, utcnow

        while not self.stop.wait(interval):
            with self.factory() as s, s.begin():
                job = Job(tenant_id=self.tenant, spec=self.spec, dispatched_at=utcnow())
                s.add(job)
                s.flush()
                job_id = job.id
            with self.lock:
                self.jobs.append(job_id)
            with contextlib.suppress(Exception):
                publish(self.client, job_id)

    def rows(self) -> dict[str, Any]:
        from jobs.models import Job

        with self.factory() as s:
            return {r.id: r for r in s.execute(select(Job.id, Job.state, Job.attempt, Job.worker_id))}


def _until(check: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``check()``; None past ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _running_job(w: Worker) -> str | None:
    """The job ``w`` claimed last (from its log)."""
    for line in reversed(w.log_path.read_text(errors="replace").splitlines()):
        if " claimed by " in line and "job " in line:
            return line.split("job ", 1)[1].split(":", 1)[0]
    return None


def _claimed_or_done(run: Run, pending: dict[str, int]) -> Callable[[], bool]:
    def check() -> bool:
        rows = run.rows()
        return all(rows[j].state in TERMINAL or (rows[j].state == "RUNNING" and rows[j].attempt > a)
                   for j, a in pending.items())
    return check


def kills(run: Run, workers: list[Worker], n: int, fault: Fault, timeout: float) -> None:
    for i in range(n):
        w = workers[i % len(workers)]
        job = None
        for _ in range(400):
            job = _running_job(w)
            rows = run.rows()
            if job and job in rows and rows[job].state == "RUNNING" and job not in fault.victims:
                break
            time.sleep(0.05)
        else:
            continue
        attempt = run.rows()[job].attempt
        w.kill()
        fault.victims.add(job)
        fresh = Worker(w.env, f"w{i % len(workers)}-{i}")
        workers[i % len(workers)] = fresh
        starting = threading.Thread(target=fresh.start, daemon=True)  # restarted at once, as a supervisor would
        starting.start()
        took = _until(_claimed_or_done(run, {job: attempt}), timeout)
        fault.recoveries.append(timeout if took is None else took)
        starting.join()


def pg_outage(run: Run, proxy: TcpProxy | None, seconds: float, fault: Fault, timeout: float) -> None:
    if proxy is not None:
        proxy.cut()
        time.sleep(seconds)
        proxy.restore()
    else:
        version = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.split()[0]
        subprocess.run(["pg_ctlcluster", version, "main", "restart"], check=True)
    before = {j: (r.state, r.attempt) for j, r in run.rows().items()}
    took = _until(lambda: _moved(run, before), timeout)  # the first job claimed or finished after the return
    fault.recoveries.append(timeout if took is None else took)


def _moved(run: Run, before: dict[str, tuple[str, int]]) -> bool:
    rows = run.rows()
    return any((rows[j].state, rows[j].attempt) != seen for j, seen in before.items() if j in rows)


def redis_outage(run: Run, env: Env, proxy: TcpProxy | None, seconds: float, fault: Fault, timeout: float) -> None:
    if proxy is not None:
        proxy.cut()
        r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        r.delete(env.queue, f"_kombu.binding.{env.queue}")
        time.sleep(seconds)
        proxy.restore()
    else:
        with redis_restarted():
            time.sleep(seconds)
    from worker.maintenance import pending_job_ids

    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    queued = {j for j, r in run.rows().items() if r.state == "QUEUED"}

    def redispatched() -> bool:  # every job left QUEUED has a message again (or was claimed)
        left = {j for j in queued if run.rows()[j].state == "QUEUED"}
        return left <= (pending_job_ids(broker, env.queue) or set())

    took = _until(redispatched, timeout)
    fault.recoveries.append(timeout if took is None else took)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--pg-outage", type=float, default=20.0, help="seconds the database is cut")
    p.add_argument("--redis-outage", type=float, default=10.0, help="seconds the broker is cut")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between submitted jobs")
    p.add_argument("--steps", type=int, default=300, help="training steps of each job")
    p.add_argument("--drain", type=float, default=600.0, help="seconds to wait for every job at the end")
    p.add_argument("--recovery-timeout", type=float, default=300.0)
    p.add_argument("--real-restarts", action="store_true", help="restart the real servers instead of cutting proxies")
    a = p.parse_args(argv)
    services_or_fail()
    spec = {**TINY_SPEC, "train": {"steps": a.steps}, "diagnostics": {**TINY_SPEC["diagnostics"], "every": a.steps}}
    import tempfile

    from jobs.db import session_factory

    with fresh_database("glorot_bench_faults") as url, tempfile.TemporaryDirectory() as tmp, \
            contextlib.ExitStack() as stack:
        pg_proxy = None if a.real_restarts else stack.enter_context(TcpProxy("127.0.0.1", make_url(url).port or 5432))
        rd_proxy = None if a.real_restarts else stack.enter_context(TcpProxy(REDIS_HOST, REDIS_PORT))
        worker_url = url if pg_proxy is None else make_url(url).set(host="127.0.0.1", port=pg_proxy.port) \
            .render_as_string(hide_password=False)
        extra = {"GLOROT_SWEEPER_QUEUED_AFTER_S": "120", "GLOROT_DATABASE_URL": worker_url}
        if rd_proxy is not None:
            extra["GLOROT_BROKER_URL"] = f"redis://127.0.0.1:{rd_proxy.port}/{REDIS_DB}"
        env = Env(database_url=worker_url, tmp=Path(tmp), extra=extra)
        factory = session_factory(url)  # the bench's own view, around the proxy
        with env.applied() as client:
            run = Run(factory, client, make_tenant(factory), spec)
            workers = [Worker(env, f"w{i}").start() for i in range(a.workers)]
            try:
                streamer = threading.Thread(target=run.stream, args=(a.interval,), daemon=True)
                streamer.start()
                faults = [Fault("worker SIGKILL"), Fault("PostgreSQL " + ("restart" if a.real_restarts else "outage")),
                          Fault("Redis restart")]
                kills(run, workers, a.kills, faults[0], a.recovery_timeout)
                pg_outage(run, pg_proxy, a.pg_outage, faults[1], a.recovery_timeout)
                redis_outage(run, env, rd_proxy, a.redis_outage, faults[2], a.recovery_timeout)
                run.stop.set()
                streamer.join()
                _until(lambda: all(r.state in TERMINAL for r in run.rows().values()), a.drain)
                report(run, faults, a)
            finally:
                for w in workers:
                    w.stop()
    return 0


def report(run: Run, faults: list[Fault], a: argparse.Namespace) -> None:
    rows = run.rows()
    victims = set().union(*(f.victims for f in faults))
    lost = [j for j, r in rows.items() if r.state == "FAILED"]
    stuck = [j for j, r in rows.items() if r.state not in TERMINAL]
    twice = [j for j, r in rows.items() if r.attempt > 1]
    needless = [j for j in twice if j not in victims]
    print(f"\n{len(rows)} jobs ({a.steps} steps each, one every {a.interval:g} s), {a.workers} workers")
    print(f"{'':28} {'jobs':>6}")
    for label, ids in (("succeeded", [j for j, r in rows.items() if r.state == "SUCCEEDED"]), ("lost (FAILED)", lost),
                       ("stuck (not finished)", stuck), ("run twice (attempts > 1)", twice),
                       ("re-run needlessly", needless)):
        print(f"{label:28} {len(ids):>6}")
    print(f"\n{'fault':28} {'count':>6} {'recovery median s':>18} {'max s':>8}")
    for f in faults:
        if f.recoveries:
            print(f"{f.name:28} {len(f.recoveries):>6} {statistics.median(f.recoveries):>18.1f} "
                  f"{max(f.recoveries):>8.1f}")
    if lost or stuck:
        for j in (lost + stuck)[:10]:
            print("  ", j, rows[j].state, rows[j].attempt)


if __name__ == "__main__":
    raise SystemExit(main())
