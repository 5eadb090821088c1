"""Credentials of the web callback API: web password (pbkdf2_sha256) or API key (sha256).

Stored forms come from ``config.users`` (``schemas.reference.User``): ``web_password_hash`` is
``pbkdf2_sha256$<iterations>$<salt>$<hex digest>`` (the salt is used as text, Django-style) and
``api_key_sha256`` is the hex SHA-256 of the key. Comparisons use ``hmac.compare_digest``; an unknown
user still costs one pbkdf2 run, so response time does not tell which usernames exist.

The directory is a copy of the users in the shared reference view (``callback.reference``), taken
whenever that view changed: the view belongs to the thread that follows Kafka, the directory is
what request handlers read, and a whole-copy swap is what makes a deleted user disappear too.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from schemas.reference import User

if TYPE_CHECKING:
    from callback.reference import ReferenceData

#: a hash computed for unknown usernames so they take as long as known ones
_DUMMY_HASH = "pbkdf2_sha256$200000$dummy-salt$" + "0" * 64
_MAX_ITERATIONS = 2_000_000


def hash_password(password: str, salt: str, iterations: int = 200_000) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``pbkdf2_sha256$iter$salt$hex`` hash; False for malformed hashes."""
    try:
        algorithm, iterations_text, salt, expected = stored.split("$", 3)
        iterations = int(iterations_text)
    except ValueError:
        return False
    if algorithm != "pbkdf2_sha256" or not 1 <= iterations <= _MAX_ITERATIONS:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return hmac.compare_digest(digest, expected.lower())


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class UserDirectory:
    """The users that may call the API, indexed by web username and API-key digest. Thread-safe
    replacement: the web process swaps users in as ``config.users`` changes."""

    def __init__(self, users: Iterable[User] = ()) -> None:
        self._lock = threading.Lock()
        self._by_username: dict[str, User] = {}
        self._by_key: dict[str, User] = {}
        #: the view and its ``version`` as of the last ``sync``
        self._synced: tuple[ReferenceData, int] | None = None
        self.replace(users)

    def replace(self, users: Iterable[User]) -> None:
        by_username, by_key = {}, {}
        for user in users:
            if user.web_username:
                by_username[user.web_username] = user
            if user.api_key_sha256:
                by_key[user.api_key_sha256] = user
        with self._lock:
            self._by_username, self._by_key = by_username, by_key

    def sync(self, data: ReferenceData) -> bool:
        """Make the directory hold exactly ``data.users`` (deleted users included: they go), if the
        view changed since the last call; True when it did. Call it on the thread that changes
        ``data``."""
        if self._synced is not None and self._synced[0] is data and self._synced[1] == data.version:
            return False
        self.replace(data.users.values())
        self._synced = (data, data.version)
        return True

    def upsert(self, user: User) -> None:
        with self._lock:
            self._by_username = {k: v for k, v in self._by_username.items() if v.user_id != user.user_id}
            self._by_key = {k: v for k, v in self._by_key.items() if v.user_id != user.user_id}
            if user.web_username:
                self._by_username[user.web_username] = user
            if user.api_key_sha256:
                self._by_key[user.api_key_sha256] = user

    def __len__(self) -> int:
        return len({u.user_id for u in (*self._by_username.values(), *self._by_key.values())})

    def by_password(self, username: str, password: str) -> User | None:
        user = self._by_username.get(username)
        stored = user.web_password_hash if user is not None and user.web_password_hash else _DUMMY_HASH
        ok = verify_password(password, stored)
        return user if ok and user is not None else None

    def by_api_key(self, api_key: str) -> User | None:
        digest = api_key_digest(api_key)
        user = self._by_key.get(digest)
        if user is None or not user.api_key_sha256 or not hmac.compare_digest(digest, user.api_key_sha256):
            return None
        return user
