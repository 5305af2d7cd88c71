"""Status polling: 32 concurrent clients against ONE uvicorn worker backed by Postgres.

GET /v1/jobs/{id} (Bearer auth, a database read) beside a bare FastAPI endpoint on the same server in
the same run (benchmarks/_polling_app.py). Load from ``wrk`` (2 threads, 32 connections) on
loopback, rounds alternating bare/poll. Target: poll ≥ 0.5 × the bare rate. Prints the ratio last.

Run: ``.venv/bin/python benchmarks/bench_polling.py [--seconds 10] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from _service import TINY_SPEC, api_server, stack, wrk


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    with stack() as st, api_server(st, app="benchmarks._polling_app:create") as base:
        auth = {"Authorization": f"Bearer {st.key}"}
        r = httpx.post(f"{base}/v1/experiments", json=TINY_SPEC, headers=auth)
        r.raise_for_status()
        job_url = f"{base}/v1/jobs/{r.json()['id']}"
        assert httpx.get(job_url, headers=auth).status_code == 200
        wrk(f"{base}/bench/bare", connections=args.connections, seconds=2)  # warm-up
        wrk(job_url, connections=args.connections, seconds=2, headers=auth)
        bare, poll = [], []
        for i in range(args.rounds):
            bare.append(wrk(f"{base}/bench/bare", connections=args.connections, seconds=args.seconds))
            poll.append(wrk(job_url, connections=args.connections, seconds=args.seconds, headers=auth))
            print(f"round {i + 1}: bare {bare[-1]['rps']:8.0f} req/s p99 {bare[-1]['p99_ms']:6.1f} ms | "
                  f"poll {poll[-1]['rps']:8.0f} req/s p99 {poll[-1]['p99_ms']:6.1f} ms | "
                  f"non-2xx {int(bare[-1]['bad'] + poll[-1]['bad'])}", flush=True)  # fmt: skip
        b = sum(x["rps"] for x in bare) / len(bare)
        p = sum(x["rps"] for x in poll) / len(poll)
        print(f"bare_rps {b:.0f}  bare_p99_ms {max(x['p99_ms'] for x in bare):.1f}")
        print(f"poll_rps {p:.0f}  poll_p99_ms {max(x['p99_ms'] for x in poll):.1f}")
        print(f"clients {args.connections}, uvicorn workers 1, database postgres, rounds {args.rounds} x "
              f"{args.seconds:g}s each")  # fmt: skip
        print(f"poll_vs_bare_ratio {p / b:.3f} (target >= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
