"""Request dependencies: the application context, a database session, and the caller's tenant.

Auth is always on for /v1: ``Authorization: Bearer <key>``. The key's HMAC is looked up (one indexed
equality); a verified key is cached in memory for ``auth_cache_ttl_s`` so that status polling costs
one query, not two. Failures are 401 problems with ``WWW-Authenticate: Bearer``.

The context and auth dependencies are ``async``: FastAPI runs a sync dependency in the thread pool,
a hop that costs more than the work itself here. Only a key-cache miss goes to the database, through
the thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from api.dispatch import Dispatcher
from api.jobcache import JobCache
from api.problems import Problem
from api.security import hash_api_key
from jobs.models import ApiKey, Tenant
from jobs.settings import Settings


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every query is scoped to."""

    tenant_id: int
    tenant_name: str
    key_id: int


@dataclass
class AppContext:
    """Everything a request needs, built once per app (``app.state.ctx``)."""

    settings: Settings
    factory: sessionmaker[Session]
    dispatcher: Dispatcher
    secret: bytes
    job_cache: JobCache = field(default_factory=lambda: JobCache(0))
    _auth_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    _auth_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> Engine:
        return self.factory.kw["bind"]  # type: ignore[no-any-return]

    def cached_principal(self, key_hash: str) -> Principal | None:
        hit = self._auth_cache.get(key_hash)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def remember(self, key_hash: str, principal: Principal) -> None:
        ttl = self.settings.auth_cache_ttl_s
        if ttl <= 0:
            return
        with self._auth_lock:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[key_hash] = (principal, time.monotonic() + ttl)


async def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def get_session(ctx: Annotated[AppContext, Depends(get_ctx)]) -> Iterator[Session]:
    with ctx.factory() as session:
        yield session


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="glorot"'})


def _lookup_key(ctx: AppContext, key_hash: str) -> Principal | None:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(ApiKey.id, ApiKey.tenant_id, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        ).one_or_none()
    return None if row is None else Principal(tenant_id=row.tenant_id, tenant_name=row.name, key_id=row.id)


async def authenticate(request: Request) -> Principal:
    ctx: AppContext = request.app.state.ctx
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("the Authorization header must be 'Bearer <api key>'")
    key_hash = hash_api_key(key, ctx.secret)
    principal = ctx.cached_principal(key_hash)
    if principal is not None:
        return principal
    principal = await run_in_threadpool(_lookup_key, ctx, key_hash)
    if principal is None:
        raise _unauthorized("unknown or revoked API key")
    ctx.remember(key_hash, principal)
    return principal


CtxDep = Annotated[AppContext, Depends(get_ctx)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
