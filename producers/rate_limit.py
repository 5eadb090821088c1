"""Token buckets for the web callback API: per user and per number to call back.

Why both: a user's credentials leaking should not let anyone ring thousands of phones (per user), and
many users must not be able to harass one number (per number). A request must fit both buckets, and
takes a token from each only when it does, so a refused request costs nothing.

Pure: time is an argument, so the tests step a fake clock. Memory is bounded (least recently used
keys go first; a forgotten key just starts with a full bucket again).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: seconds until a token is available (0 when allowed); for the ``Retry-After`` header
    retry_after_s: float = 0.0
    limited_by: str | None = None


class TokenBuckets:
    """One bucket per key: ``burst`` tokens, refilled at ``per_minute`` tokens per minute."""

    def __init__(self, name: str, *, per_minute: float, burst: float | None = None, max_keys: int = 100_000):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.name = name
        self.rate_per_s = per_minute / 60.0
        self.burst = burst if burst is not None else max(1.0, per_minute)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
            bucket.updated = now
            self._buckets.move_to_end(key)
        return bucket

    def wait_s(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a whole token (0 = now)."""
        bucket = self._refilled(key, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate_per_s

    def take(self, key: str, now: float) -> None:
        self._refilled(key, now).tokens -= 1.0


def acquire(checks: list[tuple[TokenBuckets, str]], now: float) -> Decision:
    """Take one token from every (buckets, key) pair, or none of them if any is empty."""
    worst: tuple[float, str | None] = (0.0, None)
    for buckets, key in checks:
        wait = buckets.wait_s(key, now)
        if wait > worst[0]:
            worst = (wait, buckets.name)
    if worst[1] is not None:
        return Decision(False, math.ceil(worst[0] * 1000) / 1000, worst[1])
    for buckets, key in checks:
        buckets.take(key, now)
    return Decision(True)
