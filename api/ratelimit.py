"""Per-tenant request rate limit: one token bucket per tenant, in each API process.

A tenant may send ``burst`` requests at once and ``rate`` per second after that; a request that
finds the bucket empty is answered 429 with ``Retry-After`` (the seconds until a token is back,
rounded up). The buckets live in the process: with N API processes behind a balancer a tenant gets
at most N × ``rate``. That is the point of the limit (no tenant can flood the API and the database
with requests), and it costs a dict lookup and a few float operations per request, no round trip.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

#: Buckets kept before idle ones are forgotten (a forgotten bucket comes back full, which is harmless).
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TenantRateLimiter:
    """Token buckets keyed by tenant id. ``rate`` ≤ 0 turns the limit off."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, tenant_id: int, now: float | None = None) -> float:
        """Spend one token of ``tenant_id``: 0.0 when allowed, else the seconds until a token is back."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(tenant_id)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._forget_full(now)
                bucket = self._buckets[tenant_id] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (their tenants are idle); all of them if none has."""
        full = [t for t, b in self._buckets.items() if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        for t in full or list(self._buckets):
            del self._buckets[t]


def retry_after(wait_s: float) -> str:
    """``Retry-After`` in whole seconds (at least 1), as RFC 9110 wants it."""
    return str(max(1, math.ceil(wait_s)))
