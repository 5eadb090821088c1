"""Credentials of the web callback API: web password (pbkdf2_sha256) or API key (sha256).

Stored forms come from ``auth.web_credentials`` (``schemas.credentials.WebCredentials``, kept off
``config.users`` so that only this API reads them): ``web_password_hash`` is
``pbkdf2_sha256$<iterations>$<salt>$<hex digest>`` (the salt is used as text, Django-style) and
``api_key_sha256`` is the hex SHA-256 of the key. Comparisons use ``hmac.compare_digest``; an unknown
user still costs one pbkdf2 run, so response time does not tell which usernames exist.

The directory is a copy of the users in the shared reference view (``callback.reference``), each
joined with its credentials by user id, taken whenever that view changed: the view belongs to the
thread that follows Kafka, the directory is what request handlers read, and a whole-copy swap is
what makes a deleted user disappear too. A user can log in only while both records exist: a
tombstone on ``config.users`` or on ``auth.web_credentials`` locks them out.

pbkdf2 is slow on purpose (200k rounds, about 0.1 s of CPU), so it must not run on the web API's
event loop: there, forty wrong passwords in parallel stall every other request, the health check
included, for seconds. ``HashPool`` runs it on a few threads (``hashlib`` releases the GIL while
hashing) and admits only a bounded number of checks at a time: past that a check is refused at once
(``HashPoolBusy``, a 503 for the client) rather than queued, so a flood of logins costs bounded CPU
and bounded latency instead of an ever longer queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from schemas.credentials import PBKDF2_MAX_ITERATIONS, WebCredentials
from schemas.reference import User

if TYPE_CHECKING:
    from callback.reference import ReferenceData

#: a hash computed for unknown usernames so they take as long as known ones
_DUMMY_HASH = "pbkdf2_sha256$200000$dummy-salt$" + "0" * 64

T = TypeVar("T")


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
    if algorithm != "pbkdf2_sha256" or not 1 <= iterations <= PBKDF2_MAX_ITERATIONS:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return hmac.compare_digest(digest, expected.lower())


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class UserDirectory:
    """The users that may call the API, indexed by web username and API-key digest, each with its
    credentials. Thread-safe replacement: the web process swaps users in as ``config.users`` and
    ``auth.web_credentials`` change."""

    def __init__(self, users: Iterable[User] = (), credentials: Iterable[WebCredentials] = ()) -> None:
        self._lock = threading.Lock()
        self._by_username: dict[str, tuple[User, WebCredentials]] = {}
        self._by_key: dict[str, tuple[User, WebCredentials]] = {}
        #: the view and its ``version`` as of the last ``sync``
        self._synced: tuple[ReferenceData, int] | None = None
        self.replace(users, credentials)

    def replace(self, users: Iterable[User], credentials: Iterable[WebCredentials]) -> None:
        """Hold exactly the ``users`` that have ``credentials`` (joined by user id)."""
        logins = {c.user_id: c for c in credentials}
        by_username, by_key = {}, {}
        for user in users:
            login = logins.get(user.user_id)
            if login is None:
                continue
            if login.web_username:
                by_username[login.web_username] = (user, login)
            if login.api_key_sha256:
                by_key[login.api_key_sha256] = (user, login)
        with self._lock:
            self._by_username, self._by_key = by_username, by_key

    def sync(self, data: ReferenceData) -> bool:
        """Make the directory hold exactly ``data.users`` with ``data.web_credentials`` (deleted
        ones included: they go), if the view changed since the last call; True when it did. Call it
        on the thread that changes ``data``."""
        if self._synced is not None and self._synced[0] is data and self._synced[1] == data.version:
            return False
        self.replace(data.users.values(), data.web_credentials.values())
        self._synced = (data, data.version)
        return True

    def __len__(self) -> int:
        return len({u.user_id for u, _ in (*self._by_username.values(), *self._by_key.values())})

    def by_password(self, username: str, password: str) -> User | None:
        user, login = self._by_username.get(username, (None, None))
        stored = login.web_password_hash if login is not None and login.web_password_hash else _DUMMY_HASH
        ok = verify_password(password, stored)
        return user if ok and user is not None else None

    def by_api_key(self, api_key: str) -> User | None:
        digest = api_key_digest(api_key)
        user, login = self._by_key.get(digest, (None, None))
        if login is None or not login.api_key_sha256 or not hmac.compare_digest(digest, login.api_key_sha256):
            return None
        return user


class HashPoolBusy(Exception):
    """Every slot of the ``HashPool`` is taken: refuse the login now, do not queue it."""


def default_hash_threads() -> int:
    """Half the CPUs, 1 to 4: the rest stay free for the event loop and the Kafka client."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class HashPool:
    """Bounded, off-loop execution of password hashing.

    ``threads`` run hashes; at most ``max_in_flight`` checks (running or waiting for a thread) are
    admitted, so the worst wait is about ``max_in_flight / threads`` hash times. A slot is freed when
    the hash has really finished, not when its caller stopped waiting (a client that disconnects
    does not make room while its hash still burns a CPU).
    """

    def __init__(self, threads: int | None = None, max_in_flight: int | None = None) -> None:
        self.threads = threads if threads is not None else default_hash_threads()
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        self.max_in_flight = max_in_flight if max_in_flight is not None else 4 * self.threads
        if self.max_in_flight < self.threads:
            raise ValueError("max_in_flight must be at least threads")
        self._executor = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="web-hash")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _release(self, _: concurrent.futures.Future[object]) -> None:
        with self._lock:
            self._in_flight -= 1

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a pool thread; ``HashPoolBusy`` at once when the pool is full."""
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                raise HashPoolBusy(f"{self._in_flight} password checks already under way")
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        # runs in the worker thread when fn returns, or at once if cancelled before it started
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the threads once their current hashes are done; waiting ones are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
