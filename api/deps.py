"""Request dependencies: the application context, a database session, and the caller's tenant.

Auth is always on for /v1: ``Authorization: Bearer <key>``. The key's HMAC is looked up (one indexed
equality); a verified key is cached in memory for ``auth_cache_ttl_s`` so that status polling costs
one query, not two. Failures are 401 problems with ``WWW-Authenticate: Bearer``.

Revocation reaches every API process within ``auth_revocation_check_s``: while keys are cached, a
process reads the *revocation epoch* of the key table (how many keys there are, how many are
revoked, the newest revocation and the highest id: one aggregate over a small table) at most once
per interval, and drops every cached key when it moved. A revoked or deleted key is then looked up
again and refused. A lookup that started before the epoch moved does not put its answer in the
cache (a generation counter), so a key revoked during its lookup is not cached as valid.

Each authenticated request also spends a token of its tenant's rate limit (``api.ratelimit``):
past it the answer is 429 with ``Retry-After``.

The context and auth dependencies are ``async``: FastAPI runs a sync dependency in the thread pool,
a hop that costs more than the work itself here. Only a key-cache miss goes to the database, through
the thread pool.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.dispatch import Dispatcher
from api.jobcache import JobCache
from api.problems import Problem
from api.ratelimit import TenantRateLimiter, retry_after
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
    #: the key table's revocation epoch when last read, and when (monotonic) that read started
    _epoch: tuple[object, ...] | None = None
    _epoch_read_at: float = -math.inf
    _epoch_reading: bool = False
    #: bumped whenever the cache is dropped: a lookup from an older generation is not cached
    _generation: int = 0
    limiter: TenantRateLimiter | None = None

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = TenantRateLimiter(self.settings.tenant_rate_per_s, self.settings.tenant_rate_burst)

    @property
    def engine(self) -> Engine:
        return self.factory.kw["bind"]  # type: ignore[no-any-return]

    @property
    def generation(self) -> int:
        """The auth cache's generation now: a lookup passes the one it started in to :meth:`remember`."""
        return self._generation

    def cached_principal(self, key_hash: str) -> Principal | None:
        hit = self._auth_cache.get(key_hash)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def remember(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Cache ``principal``, unless the cache was dropped since ``generation`` (the lookup's start)."""
        ttl = self.settings.auth_cache_ttl_s
        if ttl <= 0:
            return
        with self._auth_lock:
            if generation != self._generation:
                return
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[key_hash] = (principal, time.monotonic() + ttl)

    def epoch_due(self, now: float) -> bool:
        """Whether the revocation epoch should be read now (something is cached, the interval passed,
        and no other request of this process is reading it)."""
        return (bool(self._auth_cache) and not self._epoch_reading
                and now - self._epoch_read_at >= self.settings.auth_revocation_check_s)

    @contextmanager
    def reading_epoch(self) -> Iterator[None]:
        """Mark the revocation epoch as being read while the block runs: :meth:`epoch_due` is false for
        this process's other requests meanwhile, so one read at a time goes to the database."""
        self._epoch_reading = True
        try:
            yield
        finally:
            self._epoch_reading = False

    def see_epoch(self, epoch: tuple[object, ...], read_at: float) -> None:
        """The epoch read at ``read_at``: a change (or the first read) drops every cached key."""
        with self._auth_lock:
            if epoch != self._epoch:
                self._auth_cache.clear()
                self._generation += 1
                self._epoch = epoch
            self._epoch_read_at = max(self._epoch_read_at, read_at)


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


def _read_epoch(ctx: AppContext) -> tuple[object, ...]:
    """The key table's revocation epoch: it moves when a key is revoked, deleted or created."""
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(func.count(), func.count(ApiKey.revoked_at), func.max(ApiKey.revoked_at), func.max(ApiKey.id))
        ).one()
    return tuple(row)


async def _check_revocations(ctx: AppContext) -> None:
    """Drop the cached keys if a key was revoked since the last look (at most once per interval)."""
    now = time.monotonic()
    if not ctx.epoch_due(now):
        return
    with ctx.reading_epoch():
        epoch = await run_in_threadpool(_read_epoch, ctx)
    ctx.see_epoch(epoch, now)


def _rate_limit(ctx: AppContext, principal: Principal) -> None:
    wait = ctx.limiter.take(principal.tenant_id) if ctx.limiter is not None else 0.0
    if wait > 0:
        raise Problem(429, "rate-limited", f"tenant {principal.tenant_name!r} is over its request rate "
                      f"({ctx.settings.tenant_rate_per_s:g}/s, bursts of {ctx.settings.tenant_rate_burst}); "
                      "retry after the Retry-After seconds", headers={"Retry-After": retry_after(wait)})


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
    await _check_revocations(ctx)
    principal = ctx.cached_principal(key_hash)
    if principal is None:
        generation = ctx.generation
        principal = await run_in_threadpool(_lookup_key, ctx, key_hash)
        if principal is None:
            raise _unauthorized("unknown or revoked API key")
        ctx.remember(key_hash, principal, generation)
    _rate_limit(ctx, principal)
    return principal


CtxDep = Annotated[AppContext, Depends(get_ctx)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
