"""A small per-process cache of ``GET /v1/jobs/{id}`` responses (status polling).

Clients poll a job's status in tight loops while a runner writes its progress at most about once a
second (``GLOROT_PROGRESS_INTERVAL_S``). So the serialised response (JSON bytes and an ETag) is kept
in memory for ``GLOROT_JOB_CACHE_TTL_S`` (default 0.25 s), keyed by **(tenant id, job id)**: polls of
the same job within the TTL are answered from memory, and the database is read at most about
1/TTL times a second per job and process, however many clients poll.

* **Staleness bound**: a state or progress change written by another process (a Celery worker, the
  local runner's job process, another API process) is visible at most ``ttl`` seconds later.
* **Writes of this process** (cancel) invalidate the entry, so they are visible at once here.
* **Tenant isolation**: the key includes the caller's tenant, so another tenant never hits an entry;
  its request goes to the database, which answers 404. Misses (404s) are never cached.
* **One load per key at a time**: concurrent misses of the same key await the same database read.

Used only from the event loop thread (the route and the cancel route are ``async``), so it needs no
lock. ``ttl <= 0`` turns it off (every poll reads the database).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedJob:
    """A job's response: the exact body bytes and their strong ETag (quoted)."""

    body: bytes
    etag: str


def make_entry(body: bytes) -> CachedJob:
    return CachedJob(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


Key = tuple[int, str]


class JobCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_s
        self.max_entries = max_entries
        self._entries: dict[Key, tuple[CachedJob, float]] = {}
        self._loading: dict[Key, asyncio.Future[CachedJob]] = {}
        self._epoch = 0  # bumped by every invalidation; a load that straddles one is not stored

    async def get(self, tenant_id: int, job_id: str, load: Callable[[], Awaitable[CachedJob]]) -> CachedJob:
        """The cached response of the job, or the result of ``load()`` (shared by concurrent misses of the
        same key; its exceptions propagate to each of them and nothing is cached)."""
        key = (tenant_id, job_id)
        hit = self._entries.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        if self.ttl <= 0:
            return await load()
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(load())  # its own task: a cancelled poller does not cancel the others
            self._loading[key] = task
            epoch = self._epoch
            task.add_done_callback(lambda t: self._settle(key, t, epoch))
        return await asyncio.shield(task)

    def _settle(self, key: Key, task: asyncio.Future[CachedJob], epoch: int) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if task.cancelled() or task.exception() is not None:  # (marks the exception retrieved)
            return
        if epoch != self._epoch:  # this process wrote a job meanwhile: the result may predate the write
            return
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._evict(now)
        self._entries[key] = (task.result(), now + self.ttl)

    def invalidate(self, tenant_id: int, job_id: str) -> None:
        """Forget the job (after a write of this process): the next poll reads the database."""
        key = (tenant_id, job_id)
        self._epoch += 1
        self._entries.pop(key, None)
        self._loading.pop(key, None)  # later polls must not join a load that may predate the write

    def _evict(self, now: float) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
