"""``glorot worker``: start a Celery worker for GPU jobs, with the options the design needs.

One worker per GPU: ``glorot worker --gpu 0``, ``glorot worker --gpu 1``, … each pins its jobs to one
device through ``CUDA_VISIBLE_DEVICES`` and runs one job at a time in a freshly forked process.
"""

from __future__ import annotations

import argparse
import os
import socket


def _cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        # Read by CUDA at its first initialisation, which happens only in the job's process.
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    if args.no_maintenance:
        os.environ["GLOROT_WORKER_MAINTENANCE"] = "0"

    from jobs.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        print("glorot worker: set GLOROT_BROKER_URL (redis://…) and GLOROT_DATABASE_URL first", flush=True)
        return 2

    from worker.celery_app import app

    name = args.name or (f"gpu{args.gpu.replace(',', '-')}" if args.gpu is not None else "glorot")
    argv = [
        "worker",
        f"--hostname={name}@{socket.gethostname()}",
        f"--concurrency={args.concurrency}",
        f"--loglevel={args.loglevel}",
        "--prefetch-multiplier=1",
        "--without-gossip",  # no worker-to-worker chatter: nothing here uses it
        "--without-mingle",  # start consuming at once instead of syncing revokes with peers
        "--without-heartbeat",  # liveness is the job heartbeat in the database, not worker events
    ]
    if args.queues:
        argv.append(f"--queues={args.queues}")
    app.worker_main(argv)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``glorot worker`` to the ``glorot`` command line (entry point ``glorot.cli: worker``)."""
    p = subparsers.add_parser(
        "worker",
        help="start a Celery worker (needs GLOROT_DATABASE_URL and GLOROT_BROKER_URL)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--gpu", default=None, help="pin the worker to this GPU index (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument(
        "--concurrency", type=int, default=1, help="jobs at once (default 1: one job per GPU; >1 only for CPU jobs)"
    )
    p.add_argument("--name", default=None, help="node name before @host (default: gpuN or glorot)")
    p.add_argument("--queues", default=None, help="comma-separated queues (default: the configured queue)")
    p.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")
    p.add_argument("--no-maintenance", action="store_true", help="do not run the sweeper and reaper beside this worker")
    p.set_defaults(func=_cmd_worker)
