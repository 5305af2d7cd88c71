"""``glorot serve``: the HTTP API and, without a broker, the local job runner, in one process.

Registered through the ``glorot.cli`` entry-point group. It lives here, not in ``api``, because it
composes the API with the worker side (``glorot_service.app.build_app``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jobs.migrate import current_revision, head_revision, upgrade
from jobs.settings import get_settings


def register(sub: Any) -> None:
    """Add ``glorot serve`` to ``glorot``'s subparsers."""
    p = sub.add_parser("serve", help="run the HTTP API (and, without a broker, the local job runner)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from glorot_service.app import build_app

    settings = get_settings()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = settings.resolved_database_url
    if settings.should_auto_migrate:
        upgrade(url)
    elif current_revision(url) != head_revision():
        print("glorot serve: the database schema is not at head; run `glorot db upgrade` first", file=sys.stderr)
        return 2
    if settings.broker_url:
        mode = f"celery via {settings.broker_url.split('@')[-1]}"
    else:
        mode = "local runner" if settings.local_runner else "no runner: jobs stay QUEUED (GLOROT_LOCAL_RUNNER=0)"
    print(f"glorot serve: http://{args.host}:{args.port} ({mode}; docs at /docs)", file=sys.stderr)
    uvicorn.run(build_app(settings), host=args.host, port=args.port, log_level=args.log_level, workers=1)
    return 0
