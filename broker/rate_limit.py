"""Per-principal rate limiting of produce requests: a token bucket per principal. Pure logic."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from eddy.models.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests per second per principal, with bursts up to `burst`. rate <= 0: off."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, principal: str, cost: float = 1.0) -> None:
        """Take `cost` tokens or raise RateLimited (with how long to wait)."""
        if self._rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return
        wait = (cost - bucket.tokens) / self._rate
        raise RateLimited(f"produce rate limit of {self._rate:g} requests/s reached", wait)
