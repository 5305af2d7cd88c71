"""Large reports under load: 32 clients fetching a 50 MB report from ONE uvicorn worker backed by Postgres.

A synthetic report shaped like the engine's (snapshots of ≈29 KB: five layers of per-unit statistics,
as the paper's 5×1000 network makes) is stored through the workers' own path (``lifecycle.claim`` +
``lifecycle.finish``, so in parts: jobs/reports.py). Then, against the same API process:

1. **idle**: its resident memory (VmRSS from /proc) after a warm-up request;
2. **one client**: ``--requests`` full fetches one after another;
3. **N clients** (``--clients``, default 32): each makes ``--requests`` full fetches, all at once.

Each phase samples the API process's VmRSS every 10 ms and reports its peak, the throughput (MB/s of
report and on the wire, requests/s) and checks every response (200, the report's length). The last line is the ratio
(peak RSS during N clients − idle RSS) / report size. A server that built the report per request
would hold its text from the driver, the parsed objects (≈1.9× the size for this float-heavy report,
measured) and the re-serialised body: ≈4× per concurrent request (≈128 for 32). One that streams
holds a batch of parts (≤ 256 KiB) and a send buffer per client, independent of the report's size
(so the ratio falls as the report grows: run two sizes to see the per-client cost stay put).
``--gzip`` asks for gzip (the middleware compresses the stream; CPU-bound on this machine). Needs
PostgreSQL on 127.0.0.1:5432 like the other benchmarks.

Run: ``.venv/bin/python benchmarks/bench_large_reports.py [--mb 50] [--clients 32] [--requests 3] [--gzip]``
(check quickly with ``--mb 5 --clients 4 --requests 2``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

sys.path.insert(0, os.path.dirname(__file__))
from _service import api_server, stack

from jobs import lifecycle
from jobs.db import dispose_engines, session_factory, transaction
from jobs.models import Job, Tenant
from jobs.reports import dumps

MB = 1_000_000


def synthetic_report(target_bytes: int, seed: int = 0) -> dict[str, Any]:
    """≈``target_bytes`` of report: snapshots of five layers × 290 float statistics (≈29 KB each)."""
    rng = random.Random(seed)

    def snapshot(step: int) -> dict[str, Any]:
        return {"step": step, "layers": [{"index": i, "activation": {"hist": [rng.random() for _ in range(290)]}}
                                         for i in range(1, 6)]}

    per_snapshot = len(dumps(snapshot(0)))
    count = max(1, round(target_bytes / per_snapshot))
    return {"schema_version": 1, "spec": {"model": {"hidden": [1000] * 5}},
            "layers": [{"index": i} for i in range(1, 6)], "snapshots": [snapshot(10 * s) for s in range(count)],
            "end": {"elapsed_s": 0.0}, "verdicts": []}


def store(url: str, report: dict[str, Any]) -> str:
    """A SUCCEEDED job of the benchmark's tenant with ``report``, written as a worker writes it."""
    factory = session_factory(url)
    with transaction(factory) as s:
        tenant_id = s.execute(select(Tenant.id).where(Tenant.name == "bench")).scalar_one()
        job = Job(tenant_id=tenant_id, spec={}, progress={}, cancel_requested=False)
        s.add(job)
        s.flush()
        job_id = job.id
    attempt = lifecycle.claim(factory, job_id, "bench")
    if attempt is None or not lifecycle.finish(factory, job_id, attempt, report, []):
        raise RuntimeError("could not store the report")
    return job_id


def server_pid(port: int) -> int:
    """The uvicorn process listening on ``port`` (one worker: the serving process itself)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in args and b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode():
            return int(entry.name)
    raise RuntimeError(f"no uvicorn process on port {port}")


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class PeakRss:
    """Samples a process's VmRSS every ``interval_s`` in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.pid, self.interval, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


@dataclass
class Phase:
    clients: int
    requests: int
    body_bytes: int
    seconds: float
    peak_rss: int


async def fetch_all(url: str, headers: dict[str, str], clients: int, requests: int, size: int | None) -> int:
    """``clients`` concurrent clients, each fetching ``url`` ``requests`` times; body bytes received
    (as sent: compressed when gzip was asked). Checks status and, uncompressed, the length."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        async def one() -> int:
            got = 0
            for _ in range(requests):
                n = 0
                async with http.stream("GET", url, headers=headers) as r:
                    if r.status_code != 200:
                        raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
                    async for chunk in r.aiter_raw(1 << 20):
                        n += len(chunk)
                if size is not None and n != size:
                    raise RuntimeError(f"got {n} bytes of a {size}-byte report")
                got += n
            return got

        return sum(await asyncio.gather(*(one() for _ in range(clients))))


def phase(pid: int, url: str, headers: dict[str, str], clients: int, requests: int, size: int | None) -> Phase:
    with PeakRss(pid) as rss:
        start = time.perf_counter()
        got = asyncio.run(fetch_all(url, headers, clients, requests, size))
        seconds = time.perf_counter() - start
    return Phase(clients, clients * requests, got, seconds, rss.peak)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50, help="report size in MB (10^6 bytes)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3, help="full fetches per client and phase")
    ap.add_argument("--gzip", action="store_true", help="ask for gzip (Accept-Encoding: gzip)")
    args = ap.parse_args()
    with stack() as st:
        report = synthetic_report(int(args.mb * MB))
        snapshots = len(report["snapshots"])
        started = time.perf_counter()
        job_id = store(st.url, report)
        stored_s = time.perf_counter() - started
        size = len(dumps(report))
        del report
        gc.collect()
        dispose_engines()
        with api_server(st) as base:
            pid = server_pid(int(base.rsplit(":", 1)[1]))
            url = f"{base}/v1/jobs/{job_id}/report"
            headers = {"Authorization": f"Bearer {st.key}", "Accept-Encoding": "gzip" if args.gzip else "identity"}
            expect = None if args.gzip else size
            r = httpx.get(url, params={"sections": "verdicts"}, headers=headers, timeout=60)  # warm-up
            r.raise_for_status()
            time.sleep(0.5)
            idle = rss_bytes(pid)
            one = phase(pid, url, headers, 1, args.requests, expect)
            many = phase(pid, url, headers, args.clients, args.requests, expect)
            hwm = rss_bytes(pid, "VmHWM")
    print(f"report {size / MB:.1f} MB ({snapshots} snapshots), stored in {stored_s:.1f} s; "
          f"{'gzip' if args.gzip else 'identity'}; uvicorn workers 1, database postgres")
    print(f"idle_rss_mb {idle / MB:.1f}")
    for p in (one, many):
        print(f"clients {p.clients:3d}: {p.requests} requests in {p.seconds:.1f} s, "
              f"{p.requests / p.seconds:.2f} req/s, {p.requests * size / MB / p.seconds:.0f} MB/s of report "
              f"({p.body_bytes / MB / p.seconds:.0f} MB/s on the wire); peak_rss_mb {p.peak_rss / MB:.1f} "
              f"(+{(p.peak_rss - idle) / MB:.1f} over idle, {(p.peak_rss - idle) / MB / p.clients:.1f} per client)")
    print(f"vm_hwm_mb {hwm / MB:.1f} (peak since the process started, import included)")
    print(f"rss_increase_per_report_one_client {(one.peak_rss - idle) / size:.3f}")
    print(f"rss_increase_per_report_{args.clients}_clients {(many.peak_rss - idle) / size:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
