"""Web credentials stay off the shared config topics: a carrier file's logins are published on
``auth.web_credentials`` only, a ``config.users`` record of an older version that still carries
them is read without them (and says so once), and a file with a broken or shared login is refused
at the line that is wrong."""

from __future__ import annotations

import json
import logging

import pytest

import schemas.reference
from callback.reference import ReferenceData
from producers.auth import UserDirectory
from schemas.carrier_config import ConfigError, load_carrier_config
from schemas.credentials import WebCredentials
from schemas.reference import LEGACY_CREDENTIAL_FIELDS, User
from tests.factories import SAMPLE_CARRIER, broken_carrier

ALICE_HASH = (
    "pbkdf2_sha256$200000$c2FsdGFsaWNl$a30f793cd2b869aa7f65c40b2ddc5128546b719bdf6cd9608e4e8f03b91a43d6"
)
ALICE_KEY_DIGEST = "cb7fa34e426302046d8d19d00987036a40d735016ec03c5609bcfc10db32f60d"


def _published(topic: str) -> dict[str, bytes]:
    """key -> value bytes of what ``callback config load`` of the sample publishes on ``topic``."""
    config = load_carrier_config(SAMPLE_CARRIER)
    return {key: value.model_dump_json().encode() for t, key, value in config.records() if t == topic}


def test_config_users_carries_no_credential_field_and_no_credential_value():
    users = _published("config.users")
    assert {"alice", "bob", "cb-owner", "chidi"} <= set(users)
    for key, value in users.items():
        assert not set(json.loads(value)) & set(LEGACY_CREDENTIAL_FIELDS), key
        assert ALICE_HASH.encode() not in value and ALICE_KEY_DIGEST.encode() not in value
    assert not any(b"pbkdf2" in value for value in users.values())


def test_every_user_gets_its_login_on_auth_web_credentials():
    users, logins = _published("config.users"), _published("auth.web_credentials")
    assert set(logins) == set(users), "one record per user, so a login removed from the file is revoked"
    alice = WebCredentials.model_validate_json(logins["alice"])
    assert (alice.user_id, alice.web_username, alice.web_password_hash, alice.api_key_sha256) == (
        "alice",
        "alice",
        ALICE_HASH,
        ALICE_KEY_DIGEST,
    )
    owner = WebCredentials.model_validate_json(logins["cb-owner"])
    assert (owner.web_username, owner.web_password_hash, owner.api_key_sha256) == (None, None, None)


def test_the_view_of_the_file_logs_alice_in_by_password_and_by_key():
    directory = UserDirectory()
    directory.sync(ReferenceData.from_carrier_config(load_carrier_config(SAMPLE_CARRIER)))
    assert directory.by_password("alice", "alice-web-secret").user_id == "alice"
    assert directory.by_api_key("demo-key-alice-7f3b2c").user_id == "alice"
    assert directory.by_password("alice", "wrong") is None


@pytest.fixture
def fresh_legacy_warning(monkeypatch):
    """The once-per-process warning about legacy records, as in a process that saw none yet."""
    monkeypatch.setattr(schemas.reference, "_legacy_warned", [False])


def test_an_older_user_record_with_credentials_is_read_without_them(fresh_legacy_warning, caplog):
    old = {
        "user_id": "alice",
        "name": "Alice",
        "tariff_id": "retail-usd",
        "balance": "25.00",
        "web_username": "alice",
        "web_password_hash": ALICE_HASH,
        "api_key_sha256": ALICE_KEY_DIGEST,
    }
    data = ReferenceData()
    with caplog.at_level(logging.DEBUG, logger="schemas.reference"):
        data.apply("config.users", "alice", json.dumps(old).encode())
        data.apply("config.users", "bob", json.dumps({**old, "user_id": "bob"}).encode())
    assert data.rejected == 0 and set(data.users) == {"alice", "bob"}, "the stages still know the users"
    assert data.users["alice"].balance == 25
    onward = data.users["alice"].model_dump_json()
    assert "pbkdf2" not in onward and ALICE_KEY_DIGEST not in onward and "web_username" not in onward
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per process, not one per record"
    assert "'alice'" in warnings[0].getMessage() and "auth.web_credentials" in warnings[0].getMessage()
    assert any(r.levelno == logging.DEBUG and "'bob'" in r.getMessage() for r in caplog.records)
    directory = UserDirectory()
    directory.sync(data)
    assert directory.by_api_key("demo-key-alice-7f3b2c") is None, "a login only from auth.web_credentials"


def test_a_user_record_without_credentials_is_not_warned_about(fresh_legacy_warning, caplog):
    with caplog.at_level(logging.DEBUG, logger="schemas.reference"):
        User.model_validate({"user_id": "u", "name": "U", "tariff_id": "t"})
    assert caplog.records == []


BOB_KEY_DIGEST = "dc216dc35a3ae4677d96f3d08e7649fa5b3bdead505cfda18bd293d29f5b5036"


@pytest.mark.parametrize(
    ("old", "new", "path", "message", "at"),
    [
        (ALICE_HASH, "sha1$abc", "users.1.web_password_hash", "should match pattern", ("sha1$abc", 1)),
        (
            ALICE_HASH,
            ALICE_HASH.replace("200000", "9000000"),
            "users.1.web_password_hash",
            "iterations",
            ("$9000000$", 1),
        ),
        (
            "web_username: bob",
            "web_username: alice",
            "users.2.web_username",
            "already used by user 'alice'",
            ("web_username: alice", 2),
        ),
        (BOB_KEY_DIGEST, ALICE_KEY_DIGEST, "users.2.api_key_sha256", "already used by user 'alice'",
         (ALICE_KEY_DIGEST, 2)),
        ("    web_username: alice\n", "", "users.1", "without a web_username", ("user_id: alice", 1)),
    ],
)
def test_a_broken_or_shared_login_is_refused_at_its_line(tmp_path, old, new, path, message, at):
    broken = broken_carrier(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_carrier_config(broken)
    (problem,) = info.value.problems
    assert problem.path == path and message in problem.message, problem
    needle, nth = at
    lines = [i for i, line in enumerate(broken.read_text().splitlines(), 1) if needle in line]
    assert problem.line == lines[nth - 1], (problem, lines)
    assert f"broken.yaml:{problem.line}: {path}" in str(info.value)
