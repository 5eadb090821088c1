"""Token buckets for the web callback API: per user and per number to call back.

Why both: a user's credentials leaking should not let anyone ring thousands of phones (per user), and
many users must not be able to harass one number (per number). A request must fit both buckets, and
takes a token from each only when it does, so a refused request costs nothing.

``FailedLogins`` uses the same buckets for wrong passwords, per username and per client address:
each password check takes a token from both *before* the (deliberately slow) pbkdf2 runs, and a
correct password gives them back. Taking first is what bounds an attack: forty concurrent guesses
cannot all pass a "has this user failed too often?" check made before any of them has failed. An
empty bucket is the lockout; it ends by itself as the bucket refills.

Pure: time is an argument, so the tests step a fake clock. Memory is bounded (least recently used
keys go first; a forgotten key just starts with a full bucket again).
"""

from __future__ import annotations

import hashlib
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

    def give_back(self, key: str, now: float) -> None:
        """Return a token taken by ``take`` (never above ``burst``)."""
        bucket = self._refilled(key, now)
        bucket.tokens = min(self.burst, bucket.tokens + 1.0)


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


#: usernames longer than this are keyed by their digest: a bucket key must not cost kilobytes
_MAX_KEY_CHARS = 128


def _bounded_key(text: str) -> str:
    if len(text) <= _MAX_KEY_CHARS:
        return text
    return "sha256:" + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()


class FailedLogins:
    """Wrong web passwords allowed per username and per client address.

    Both are needed: per username stops guessing one account from many addresses, per address
    stops one client spraying many usernames (each still costing a pbkdf2 run). Unknown usernames
    are counted too, so probing for names is limited like guessing passwords. The price, as for any
    lockout, is that someone can lock a user's *password* login for a while by failing it on
    purpose; API keys are not affected.
    """

    def __init__(
        self,
        *,
        per_user_per_minute: float = 10.0,
        per_address_per_minute: float = 30.0,
        max_keys: int = 100_000,
    ) -> None:
        self.per_user = TokenBuckets("user", per_minute=per_user_per_minute, max_keys=max_keys)
        self.per_address = TokenBuckets("address", per_minute=per_address_per_minute, max_keys=max_keys)

    def _checks(self, username: str, address: str) -> list[tuple[TokenBuckets, str]]:
        return [(self.per_user, _bounded_key(username)), (self.per_address, _bounded_key(address))]

    def attempt(self, username: str, address: str, now: float) -> Decision:
        """Take a token for a password check about to run, or refuse (``limited_by`` is ``user`` or
        ``address``) without taking any."""
        return acquire(self._checks(username, address), now)

    def succeeded(self, username: str, address: str, now: float) -> None:
        """The password was right (or never checked): give the attempt's tokens back."""
        for buckets, key in self._checks(username, address):
            buckets.give_back(key, now)
