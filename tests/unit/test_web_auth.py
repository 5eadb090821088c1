"""Password and API-key verification of the web API, and the bounded pool that hashes passwords
off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from callback.reference import ReferenceData
from producers.auth import (
    HashPool,
    HashPoolBusy,
    UserDirectory,
    api_key_digest,
    default_hash_threads,
    hash_password,
    verify_password,
)
from schemas.credentials import WebCredentials
from schemas.reference import User


def test_pbkdf2_round_trip_and_the_demo_hash():
    stored = hash_password("s3cret", "salty", iterations=1000)
    assert verify_password("s3cret", stored) and not verify_password("s3creT", stored)
    demo = (
        "pbkdf2_sha256$200000$c2FsdGFsaWNl$a30f793cd2b869aa7f65c40b2ddc5128546b719bdf6cd9608e4e8f03b91a43d6"
    )
    assert verify_password("alice-web-secret", demo)


def test_malformed_hashes_never_verify():
    for stored in (
        "",
        "plain",
        "md5$1$s$abc",
        "pbkdf2_sha256$notint$s$abc",
        "pbkdf2_sha256$0$s$abc",
        "pbkdf2_sha256$99999999$s$abc",
    ):
        assert not verify_password("x", stored)


def test_directory_by_api_key_and_by_password_and_replace():
    user = User(user_id="u1", name="U", tariff_id="t")
    login = WebCredentials(
        user_id="u1",
        web_username="u",
        api_key_sha256=api_key_digest("k1"),
        web_password_hash=hash_password("pw", "salt", 1000),
    )
    d = UserDirectory([user], [login])
    assert d.by_api_key("k1") == user and d.by_api_key("k2") is None
    assert d.by_password("u", "pw") == user and d.by_password("u", "nope") is None
    assert d.by_password("nobody", "pw") is None
    renamed = login.model_copy(update={"web_username": "renamed", "api_key_sha256": api_key_digest("k2")})
    d.replace([user], [renamed])
    assert d.by_password("u", "pw") is None and d.by_password("renamed", "pw") is not None
    assert d.by_api_key("k1") is None and d.by_api_key("k2") is not None
    assert len(d) == 1


def test_a_user_logs_in_only_while_both_the_user_and_the_login_exist():
    user = User(user_id="u1", name="U", tariff_id="t")
    login = WebCredentials(user_id="u1", api_key_sha256=api_key_digest("k1"))
    assert UserDirectory([user], []).by_api_key("k1") is None, "a user without credentials"
    assert UserDirectory([], [login]).by_api_key("k1") is None, "credentials of an unknown user"
    other = WebCredentials(user_id="u2", api_key_sha256=api_key_digest("k1"))
    assert UserDirectory([user], [other]).by_api_key("k1") is None, "joined by user id, not by key"
    no_access = WebCredentials(user_id="u1")
    assert len(UserDirectory([user], [no_access])) == 0


def test_directory_sync_copies_the_view_only_when_it_changed():
    data = ReferenceData()
    user = User(user_id="u1", name="U", tariff_id="t")
    login = WebCredentials(user_id="u1", api_key_sha256=api_key_digest("k1"))
    data.apply_model("config.users", "u1", user)
    data.apply_model("auth.web_credentials", "u1", login)
    d = UserDirectory()
    assert d.sync(data) is True and d.by_api_key("k1") == user
    assert d.sync(data) is False, "nothing changed: no rebuild"
    data.apply_model("config.users", "u1", None)
    assert d.sync(data) is True and d.by_api_key("k1") is None and len(d) == 0
    data.apply_model("config.users", "u1", user)
    assert d.sync(data) is True and d.by_api_key("k1") == user
    data.apply_model("auth.web_credentials", "u1", None)
    assert d.sync(data) is True and d.by_api_key("k1") is None, "a tombstone of the login locks out too"
    data.apply_model("auth.web_credentials", "u1", login)
    assert d.sync(data) is True and d.by_api_key("k1") == user
    other = ReferenceData()
    for user_id in ("u2", "u3", "u4", "u5", "u6", "u7"):
        other.apply_model("config.users", user_id, User(user_id=user_id, name="O", tariff_id="t"))
    assert other.version == data.version
    assert d.sync(other) is True and d.by_api_key("k1") is None, "another view at the same version"


def test_the_hash_pool_refuses_at_once_past_its_bound_and_frees_slots_when_hashes_end():
    pool = HashPool(threads=1, max_in_flight=2)
    release = threading.Event()
    started = threading.Event()

    def slow(value: int) -> int:
        started.set()
        assert release.wait(10)
        return value * 2

    async def run() -> None:
        loop_thread = threading.current_thread()
        first = asyncio.ensure_future(pool.run(slow, 1))
        second = asyncio.ensure_future(pool.run(slow, 2))  # waits for the one thread
        await asyncio.sleep(0)
        assert pool.in_flight == 2
        with pytest.raises(HashPoolBusy):
            await pool.run(slow, 3)
        assert await asyncio.to_thread(started.wait, 5)
        # a caller that gives up does not free its slot while its hash still runs
        first.cancel()
        await asyncio.sleep(0.05)
        assert pool.in_flight == 2
        with pytest.raises(HashPoolBusy):
            await pool.run(slow, 4)
        release.set()
        assert await second == 4
        for _ in range(100):
            if pool.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.in_flight == 0
        assert await pool.run(lambda: threading.current_thread() is not loop_thread)

    try:
        asyncio.run(run())
    finally:
        release.set()
        pool.close()


def test_hash_pool_bounds_are_checked():
    assert 1 <= default_hash_threads() <= 4
    with pytest.raises(ValueError):
        HashPool(threads=0)
    with pytest.raises(ValueError):
        HashPool(threads=2, max_in_flight=1)
