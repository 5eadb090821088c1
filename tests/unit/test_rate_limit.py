"""Token buckets per user and per number, and failed logins per user and per address (pure, fake
clock)."""

from __future__ import annotations

import pytest

from producers.rate_limit import FailedLogins, TokenBuckets, acquire


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


def test_a_token_given_back_is_usable_again_but_never_above_the_burst():
    b = TokenBuckets("user", per_minute=1, burst=1)
    assert acquire([(b, "a")], 0).allowed and not acquire([(b, "a")], 0).allowed
    b.give_back("a", 0)
    assert acquire([(b, "a")], 0).allowed
    b.give_back("a", 0)
    b.give_back("a", 0)
    assert acquire([(b, "a")], 0).allowed and not acquire([(b, "a")], 0).allowed


def test_failed_logins_lock_a_user_and_an_address_and_right_passwords_cost_nothing():
    logins = FailedLogins(per_user_per_minute=2, per_address_per_minute=3)  # 30 s and 20 s a token
    assert logins.attempt("alice", "10.0.0.1", 0).allowed
    logins.succeeded("alice", "10.0.0.1", 0)  # right password: as if never tried
    assert logins.attempt("alice", "10.0.0.1", 0).allowed  # wrong
    assert logins.attempt("alice", "10.0.0.2", 0).allowed  # wrong, from elsewhere
    refused = logins.attempt("alice", "10.0.0.3", 0)
    assert not refused.allowed and refused.limited_by == "user" and refused.retry_after_s == pytest.approx(30)
    assert logins.attempt("alice", "10.0.0.3", 30.1).allowed
    assert logins.attempt("bob", "10.0.0.1", 0).allowed and logins.attempt("carol", "10.0.0.1", 0).allowed
    refused = logins.attempt("dave", "10.0.0.1", 0)  # a fourth failure from 10.0.0.1 within the burst
    assert not refused.allowed and refused.limited_by == "address"


def test_overlong_usernames_share_a_bounded_key():
    logins = FailedLogins(per_user_per_minute=1, per_address_per_minute=100)
    long_name = "x" * 10_000
    assert logins.attempt(long_name, "a", 0).allowed
    assert not logins.attempt(long_name, "b", 0).allowed
    assert all(len(key) <= 128 for key in logins.per_user._buckets)
