"""Password and API-key verification of the web API."""

from __future__ import annotations

from callback.reference import ReferenceData
from producers.auth import UserDirectory, api_key_digest, hash_password, verify_password
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


def test_directory_by_api_key_and_by_password_and_upsert():
    user = User(
        user_id="u1",
        name="U",
        tariff_id="t",
        web_username="u",
        api_key_sha256=api_key_digest("k1"),
        web_password_hash=hash_password("pw", "salt", 1000),
    )
    d = UserDirectory([user])
    assert d.by_api_key("k1") == user and d.by_api_key("k2") is None
    assert d.by_password("u", "pw") == user and d.by_password("u", "nope") is None
    assert d.by_password("nobody", "pw") is None
    d.upsert(user.model_copy(update={"web_username": "renamed", "api_key_sha256": api_key_digest("k2")}))
    assert d.by_password("u", "pw") is None and d.by_password("renamed", "pw") is not None
    assert d.by_api_key("k1") is None and d.by_api_key("k2") is not None
    assert len(d) == 1


def test_directory_sync_copies_the_view_only_when_it_changed():
    data = ReferenceData()
    user = User(user_id="u1", name="U", tariff_id="t", api_key_sha256=api_key_digest("k1"))
    data.apply_model("config.users", "u1", user)
    d = UserDirectory()
    assert d.sync(data) is True and d.by_api_key("k1") == user
    assert d.sync(data) is False, "nothing changed: no rebuild"
    data.apply_model("config.users", "u1", None)
    assert d.sync(data) is True and d.by_api_key("k1") is None and len(d) == 0
    data.apply_model("config.users", "u1", user)
    assert d.sync(data) is True and d.by_api_key("k1") == user
    other = ReferenceData()
    for user_id in ("u2", "u3", "u4"):
        other.apply_model("config.users", user_id, User(user_id=user_id, name="O", tariff_id="t"))
    assert other.version == data.version
    assert d.sync(other) is True and d.by_api_key("k1") is None, "another view at the same version"
