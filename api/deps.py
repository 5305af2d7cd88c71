"""Request dependencies: the application context, a database session, and the caller's tenant.

Auth is always on for /v1: ``Authorization: Bearer <key>``. The key's HMAC is looked up (one indexed
equality); a verified key is cached in memory for ``auth_cache_ttl_s`` so that status polling costs
one query, not two. Failures are 401 problems with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.dispatch import Dispatcher
from api.models import ApiKey, Tenant
from api.problems import Problem
from api.security import hash_api_key
from api.settings import Settings


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
    _auth_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    _auth_lock: threading.Lock = field(default_factory=threading.Lock)

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


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_session(ctx: Annotated[AppContext, Depends(get_ctx)]) -> Iterator[Session]:
    with ctx.factory() as session:
        yield session


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="glorot"'})


def authenticate(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> Principal:
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
    with ctx.factory() as s:
        row = s.execute(
            select(ApiKey.id, ApiKey.tenant_id, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        ).one_or_none()
    if row is None:
        raise _unauthorized("unknown or revoked API key")
    principal = Principal(tenant_id=row.tenant_id, tenant_name=row.name, key_id=row.id)
    ctx.remember(key_hash, principal)
    return principal


CtxDep = Annotated[AppContext, Depends(get_ctx)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
