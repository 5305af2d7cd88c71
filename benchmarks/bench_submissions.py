"""Submissions: jobs/s accepted by POST /v1/experiments with Postgres and Redis.

A real uvicorn API (one worker process) with a Celery broker configured and no worker consuming, so
every accepted job is one committed row plus one published message. Load from ``wrk`` (POST with a
tiny spec, a fresh job per request), then a check that rows and queued messages agree.

Run: ``.venv/bin/python benchmarks/bench_submissions.py [--seconds 10] [--connections 32]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import psycopg
import redis

sys.path.insert(0, os.path.dirname(__file__))
from _service import BROKER_DB, TINY_SPEC, api_server, stack, wrk


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    with stack() as st, api_server(st) as base:
        script = (
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(TINY_SPEC))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {st.key}"\n'
        )
        wrk(f"{base}/v1/experiments", connections=args.connections, seconds=2, script=script)  # warm-up
        res = wrk(f"{base}/v1/experiments", connections=args.connections, seconds=args.seconds, script=script)
        with psycopg.connect(st.url.replace("postgresql+psycopg://", "postgresql://")) as db:
            rows = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        messages = redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB).llen(st.queue)
        log = "".join(p.read_text(errors="replace") for p in st.home.glob("api-*.log"))
        failed_publish = log.count("could not publish")
    accepted = res["requests"] - res["bad"]
    print(f"requests {res['requests']:.0f}  non-2xx {res['bad']:.0f}  socket_errors {res['socket_errors']:.0f}  "
          f"p50_ms {res['p50_ms']:.1f}  p99_ms {res['p99_ms']:.1f}")  # fmt: skip
    print(f"rows {rows}  queued_messages {messages}  failed_publishes {failed_publish}  (warm-up included; "
          "a row without a message is re-dispatched by the sweeper)")  # fmt: skip
    print(f"clients {args.connections}, uvicorn workers 1, postgres + redis, {args.seconds:g}s")
    print(f"jobs_accepted_per_s {accepted / args.seconds:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
