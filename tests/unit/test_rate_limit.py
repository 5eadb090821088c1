"""Token buckets per user and per number (pure, fake clock)."""

from __future__ import annotations

import pytest

from producers.rate_limit import TokenBuckets, acquire


def test_burst_then_refill_at_the_rate():
    b = TokenBuckets("user", per_minute=6, burst=2)  # one token every 10 s
    assert acquire([(b, "a")], 0).allowed and acquire([(b, "a")], 0).allowed
    refused = acquire([(b, "a")], 0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(10.0)
    assert not acquire([(b, "a")], 9.9).allowed
    assert acquire([(b, "a")], 10.1).allowed
    assert acquire([(b, "other")], 0).allowed  # keys are independent


def test_a_refused_request_takes_no_token_from_the_other_bucket():
    users = TokenBuckets("user", per_minute=60, burst=5)
    numbers = TokenBuckets("number", per_minute=1, burst=1)
    assert acquire([(users, "alice"), (numbers, "111")], 0).allowed
    for _ in range(10):
        d = acquire([(users, "alice"), (numbers, "111")], 0)
        assert not d.allowed and d.limited_by == "number"
    # alice's 4 remaining tokens are intact
    assert all(acquire([(users, "alice"), (numbers, str(n))], 0).allowed for n in range(4))
    assert acquire([(users, "alice"), (numbers, "999")], 0).limited_by == "user"


def test_memory_is_bounded():
    b = TokenBuckets("n", per_minute=1, burst=1, max_keys=3)
    for k in "abcd":
        acquire([(b, k)], 0)
    assert len(b._buckets) == 3
    assert acquire([(b, "a")], 0).allowed  # forgotten key starts full again


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        TokenBuckets("x", per_minute=0)
