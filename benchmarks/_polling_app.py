"""The real API app plus one bare endpoint, served together by one uvicorn worker (bench_polling.py).

The bare endpoint goes through the same server, event loop and middleware as the job route, and does
nothing else: the job route's cost beyond it is auth, a database read and serialisation.
"""

from __future__ import annotations

from fastapi import FastAPI

from glorot_service.app import build_app


def create() -> FastAPI:
    app = build_app()

    @app.get("/bench/bare")
    async def bare() -> dict[str, str]:
        return {"id": "00000000-0000-0000-0000-000000000000", "state": "QUEUED"}

    return app
