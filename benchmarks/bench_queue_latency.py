"""Queue latency: POST /v1/experiments → RUNNING, with an idle Celery worker.

A real uvicorn API (Postgres, Redis) and one real ``glorot worker``. Each round POSTs a tiny job,
then waits until it is terminal and the worker is idle again. Latency = the job row's ``started_at``
(set by the worker's claim, QUEUED → RUNNING) minus the moment the client sent the POST (same
machine clock). Target: median ≤ 250 ms. Prints median, p90, max; the median vs target last.

Run: ``.venv/bin/python benchmarks/bench_queue_latency.py [--jobs 30]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime

import httpx
import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from _service import TINY_SPEC, api_server, celery_worker, stack

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--idle", type=float, default=0.5, help="seconds the worker idles between jobs")
    args = ap.parse_args()
    with stack() as st, api_server(st) as base, celery_worker(st), httpx.Client(base_url=base) as http:
        auth = {"Authorization": f"Bearer {st.key}"}
        db = psycopg.connect(st.url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        lat_ms: list[float] = []
        for i in range(args.jobs + 1):
            sent = datetime.now(UTC)
            r = http.post("/v1/experiments", json=TINY_SPEC, headers=auth)
            r.raise_for_status()
            job_id = r.json()["id"]
            deadline = time.monotonic() + 120
            while True:
                state, started = db.execute("SELECT state, started_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
                if state in TERMINAL:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"job {job_id} stuck in {state}")
                time.sleep(0.05)
            if i == 0:
                continue  # the first job warms the API and the worker's first process up
            if state != "SUCCEEDED":
                print(f"warning: job {job_id} ended {state}")
            lat_ms.append((started - sent).total_seconds() * 1000)
            time.sleep(args.idle)
        db.close()
    lat_ms.sort()
    med = statistics.median(lat_ms)
    p90 = lat_ms[min(len(lat_ms) - 1, round(0.9 * (len(lat_ms) - 1)))]
    print("latencies_ms", " ".join(f"{x:.0f}" for x in lat_ms))
    print(f"jobs {len(lat_ms)}  min_ms {lat_ms[0]:.0f}  p90_ms {p90:.0f}  max_ms {lat_ms[-1]:.0f}")
    print(f"median_ms {med:.0f} (target <= 250)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
