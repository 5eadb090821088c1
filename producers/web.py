"""The web callback API (the seed's WEB callback): ``POST /v1/callbacks`` -> ``callback.requests``.

Order of checks, each with a JSON error (``{"error", "message", ...}``, the same shape for every
status, 404/405/413/500 included):

1. path and method (404, 405 with ``Allow``), body at most 64 KiB (413);
2. the body is a JSON object (422; nesting too deep for the parser is a 422 too, not a 500);
3. credentials (401). A password check is pbkdf2, slow on purpose, so it runs on a small thread
   pool (``producers.auth.HashPool``; 503 + Retry-After when every slot is taken) and wrong
   passwords are limited per username and per client address (429 + Retry-After; a lockout that
   ends as the bucket refills). The event loop stays free: ``/healthz`` answers at once even
   while a flood of wrong passwords is hashed;
4. fields (422), including the callback number policy (``NumberPolicy``: at least 6 digits, never
   an emergency number);
5. the user may use callback (403);
6. ``Idempotency-Key``: a retry with the same key and body gets the first answer again (202, same
   callback id, nothing published, no rate-limit token used); the same key with another body is a
   409 (``IdempotencyCache``);
7. rate limits per user and per number (429 + Retry-After);
8. the initiation is on Kafka (acks=all; 503 if not) -> ``202 {"callback_id"}``.

The callback id is random, or derived from the user and the ``Idempotency-Key`` so that even a
retry arriving after this process forgot the key (restart, age, size bound) keeps the id: the
processors drop an initiation whose id they already know.

Who may call comes from the same reference view as everywhere else (``callback.reference``):
built from the carrier file with ``--config``, or else read from ``config.users`` and
``auth.web_credentials`` (the logins, a topic only this API reads) and followed in a background
thread, so a user or login added, changed or deleted (tombstone) there is honoured without a
restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callback.reference import ReferenceData
from callback.reference_feed import ReferenceFeed, ReferenceFollower
from producers.auth import HashPool, HashPoolBusy, UserDirectory
from producers.kafka_out import DeliveryFailed, Publisher
from producers.metrics import WEB_REQUESTS
from producers.openapi import OPENAPI
from producers.rate_limit import FailedLogins, TokenBuckets, acquire
from schemas.callback import CallbackInitiation, InitiationOrigin
from schemas.envelope import utc_now
from schemas.reference import User
from schemas.topics import CALLBACK_REQUESTS

log = logging.getLogger(__name__)

_NUMBER = r"^\+?[0-9]{1,20}$"
PUBLISH_TIMEOUT_S = 15.0
MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 128

#: Numbers the platform never calls back, whatever the minimum length is set to. First the eight
#: every GSM/3GPP handset treats as emergency calls even without a SIM (3GPP TS 22.101: 000, 08,
#: 110, 112, 118, 119, 911, 999), then common national ones: 100-103 and 108 (India, Greece, Israel,
#: Russia/Ukraine ambulance), 111 (New Zealand), 113/115 (Italy, Vietnam), 120/122/123 (China,
#: Austria, Egypt), 15/17/18 (France), 190/192/193 (Brazil), 199 and 767 (Nigeria, Lagos),
#: 10111/10177 (South Africa). Matched alone or after a country calling code (see ``NumberPolicy``).
DEFAULT_EMERGENCY_NUMBERS: tuple[str, ...] = (
    "000", "08", "110", "112", "118", "119", "911", "999",
    "100", "101", "102", "103", "108", "111", "113", "115", "120", "122", "123",
    "15", "17", "18", "190", "192", "193", "199", "767", "10111", "10177",
)  # fmt: skip
DEFAULT_MIN_NUMBER_DIGITS = 6


class CallbackRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    callback_number: str = Field(pattern=_NUMBER)
    destination: str | None = Field(default=None, pattern=_NUMBER)
    username: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, max_length=1024)
    api_key: str | None = Field(default=None, max_length=1024)


@dataclass
class RateLimits:
    """Accepted requests per user and per number, and wrong passwords per user and per address."""

    per_user: TokenBuckets
    per_number: TokenBuckets
    logins: FailedLogins = field(default_factory=FailedLogins)

    @classmethod
    def per_minute(
        cls,
        user: float,
        number: float,
        *,
        failed_logins_per_user: float = 10.0,
        failed_logins_per_address: float = 30.0,
    ) -> RateLimits:
        return cls(
            TokenBuckets("user", per_minute=user),
            TokenBuckets("number", per_minute=number),
            FailedLogins(
                per_user_per_minute=failed_logins_per_user, per_address_per_minute=failed_logins_per_address
            ),
        )


@dataclass(frozen=True)
class NumberPolicy:
    """Which numbers may be called back.

    Too short a number is a service code, an extension or an emergency number, never a subscriber
    to ring: a callback to one would have the platform place calls (and possibly charge someone)
    to a number nobody asked to be called on, and calling emergency services back by robot is
    abuse. Emergency numbers are refused alone and after a country calling code of 1 to 3 digits
    (``+234 112``, ``+44 999``), which a minimum length alone would miss once it is lowered or the
    code is long enough.
    """

    min_digits: int = DEFAULT_MIN_NUMBER_DIGITS
    emergency_numbers: frozenset[str] = frozenset(DEFAULT_EMERGENCY_NUMBERS)

    @classmethod
    def of(cls, min_digits: int, emergency_numbers: Iterable[str]) -> NumberPolicy:
        numbers = frozenset(n.strip().lstrip("+") for n in emergency_numbers if n.strip().lstrip("+"))
        bad = sorted(n for n in numbers if not (n.isascii() and n.isdigit()))
        if bad:
            raise ValueError(f"emergency numbers must be digits: {', '.join(bad)}")
        if min_digits < 1:
            raise ValueError("the minimum number length must be at least 1 digit")
        return cls(min_digits, numbers)

    def refusal(self, number: str) -> str | None:
        """Why ``number`` (digits, no '+') may not be called back, or None when it may."""
        for emergency in self.emergency_numbers:
            if number == emergency or (number.endswith(emergency) and len(number) - len(emergency) <= 3):
                return (
                    f"{number} is an emergency number (or one behind a country code): "
                    "the platform does not call emergency services back"
                )
        if len(number) < self.min_digits:
            return (
                f"a callback number needs at least {self.min_digits} digits ({len(number)} given): "
                "short codes and emergency numbers are not called back"
            )
        return None


class _Claim(Enum):
    OWNER = "owner"  # first request with this key: handle it, then ``settle``
    REPLAY = "replay"  # answered before: return that answer
    CONFLICT = "conflict"  # the key was used with another body


@dataclass
class _Remembered:
    fingerprint: str
    created: float
    #: resolves when the first request is answered: its callback id, or None (not accepted)
    settled: asyncio.Future[str | None]
    callback_id: str | None = None


class IdempotencyCache:
    """The answers given to ``Idempotency-Key`` requests, per user and key, for ``ttl_s`` and at
    most ``max_keys`` (oldest first out). Only accepted requests are remembered: a 429 or 503 is
    not an answer a retry should get again. A retry that arrives while the first request is still
    being handled waits for it instead of publishing a second time.

    Used on one event loop only (no locks). Past the bounds a key is forgotten; a retry then
    publishes again under the same derived callback id, which the processors drop.
    """

    def __init__(self, *, max_keys: int = 20_000, ttl_s: float = 24 * 3600.0) -> None:
        if max_keys < 1 or ttl_s <= 0:
            raise ValueError("max_keys and ttl_s must be positive")
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self, now: float, *, room: int = 0) -> None:
        """Forget keys older than ``ttl_s``, and the oldest ones until ``room`` more fit."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if len(self._entries) + room <= self.max_keys and now - entry.created < self.ttl_s:
                break
            del self._entries[key]

    async def claim(
        self, key: tuple[str, str], fingerprint: str, clock: Callable[[], float]
    ) -> tuple[_Claim, str | None]:
        while True:
            self._prune(clock())
            entry = self._entries.get(key)
            if entry is None:
                self._prune(clock(), room=1)
                self._entries[key] = _Remembered(
                    fingerprint, clock(), asyncio.get_running_loop().create_future()
                )
                return _Claim.OWNER, None
            if entry.fingerprint != fingerprint:
                return _Claim.CONFLICT, None
            if entry.callback_id is not None:
                return _Claim.REPLAY, entry.callback_id
            # the first request is still under way: its outcome decides (replay, or try again)
            await asyncio.shield(entry.settled)

    def settle(self, key: tuple[str, str], callback_id: str | None) -> None:
        """The owner's outcome: remember the callback id, or forget the key (not accepted)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if callback_id is None:
            del self._entries[key]
        else:
            entry.callback_id = callback_id
        if not entry.settled.done():
            entry.settled.set_result(callback_id)


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    WEB_REQUESTS.labels(str(status)).inc()
    headers = extra.pop("headers", None)
    return web.json_response({"error": code, "message": message, **extra}, status=status, headers=headers)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _fields_error(fields: dict[str, str], code: str = "invalid_request", message: str = "") -> web.Response:
    return _error(422, code, message or "some fields are invalid", fields=fields)


#: aiohttp's own errors (raised by the router or ``request.read``), as codes of the JSON error
_HTTP_ERROR_CODES = {
    404: ("not_found", "no such path"),
    405: ("method_not_allowed", "this path does not take that method"),
    413: ("body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes"),
}


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as the JSON ``Error`` body: aiohttp answers 404/405/413 (and any crash) in text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_ERROR_CODES.get(exc.status, ("http_error", exc.reason))
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error(exc.status, code, message, headers=headers)
    except Exception:
        log.exception("web API: unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal_error", "unexpected error; it was logged")


def _header_credentials(request: web.Request) -> tuple[str | None, str | None, str | None]:
    """(username, password, api_key) from Authorization / X-API-Key."""
    api_key = request.headers.get("X-API-Key")
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value:
        return None, None, value.strip()
    if scheme.lower() == "basic" and value:
        try:
            username, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None, api_key
        return username, password, api_key
    return None, None, api_key


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def client_address(remote: str | None) -> str:
    """The key of a client for the failed-login limit: its IPv4 address, or its IPv6 /64 (one
    subscriber line gets a whole /64, so counting single IPv6 addresses would let it rotate
    through billions). Behind a reverse proxy this is the proxy: every client shares it."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def callback_id_for(user_id: str, idempotency_key: str | None) -> str:
    if idempotency_key:
        return "web-" + hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()[:32]
    return "web-" + uuid.uuid4().hex


def _fingerprint(callback_number: str, destination: str | None) -> str:
    """What makes two requests the same for ``Idempotency-Key``: the normalised number and
    destination (credentials are not part of it, and are not kept)."""
    canonical = json.dumps({"callback_number": callback_number, "destination": destination}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _accepted(callback_id: str, *, replayed: bool = False) -> web.Response:
    WEB_REQUESTS.labels("202").inc()
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return web.json_response({"callback_id": callback_id, "status": "accepted"}, status=202, headers=headers)


def build_app(
    directory: UserDirectory,
    publisher: Publisher,
    limits: RateLimits,
    *,
    clock: Callable[[], float] = time.monotonic,
    source: str = "web",
    numbers: NumberPolicy | None = None,
    hash_pool: HashPool | None = None,
    idempotency: IdempotencyCache | None = None,
) -> web.Application:
    """The aiohttp application. It owns ``hash_pool`` (default: ``HashPool()``) and closes it on
    cleanup."""
    numbers = numbers or NumberPolicy()
    pool = hash_pool or HashPool()
    remembered = idempotency or IdempotencyCache()

    async def authenticate(request: web.Request, body: dict[str, Any]) -> User | web.Response:
        """The user, or the error to answer (401, 429 failed logins, 503 hash pool full)."""
        username, password, api_key = _header_credentials(request)
        username = username or _str(body.get("username"))
        password = password if password is not None else _str(body.get("password"))
        api_key = api_key or _str(body.get("api_key"))
        user: User | None = None
        if api_key:
            # a sha256 lookup: cheap, and keys are random, not guessable: no attempt limit needed
            user = directory.by_api_key(api_key)
        elif username and password is not None:
            address = client_address(request.remote)
            attempt = limits.logins.attempt(username, address, clock())
            if not attempt.allowed:
                log.warning(
                    "web login refused: too many wrong passwords per %s (user %r, from %s)",
                    attempt.limited_by,
                    username,
                    address,
                )
                return _error(
                    429,
                    "too_many_failed_logins",
                    f"too many wrong passwords for this {attempt.limited_by}; retry later",
                    headers=_retry_after(attempt.retry_after_s),
                )
            try:
                user = await pool.run(directory.by_password, username, password)
            except HashPoolBusy:
                limits.logins.succeeded(username, address, clock())  # not checked: not a failure
                log.warning("web login refused: password checks saturated (from %s)", address)
                return _error(
                    503, "busy", "too many logins under way; retry shortly", headers=_retry_after(1)
                )
            if user is not None:
                limits.logins.succeeded(username, address, clock())
        if user is None:
            log.info("web callback refused: bad or missing credentials from %s", request.remote)
            return _error(
                401,
                "unauthenticated",
                "valid web credentials or an API key are required",
                headers={"WWW-Authenticate": 'Basic realm="callback"'},
            )
        return user

    async def create_callback(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(422, "malformed_json", "the body must be a JSON object")
        except RecursionError:
            return _error(422, "malformed_json", "the body is nested too deeply")
        if not isinstance(body, dict):
            return _error(422, "malformed_json", "the body must be a JSON object")
        user = await authenticate(request, body)
        if isinstance(user, web.Response):
            return user
        try:
            req = CallbackRequestBody.model_validate(body)
        except ValidationError as exc:
            fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
            return _fields_error(fields)
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not (
            1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
            and idempotency_key.isascii()
            and idempotency_key.isprintable()
        ):
            return _fields_error(
                {"Idempotency-Key": f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"}
            )
        number = req.callback_number.lstrip("+")
        refusal = numbers.refusal(number)
        if refusal is not None:
            log.info("web callback refused: user=%s number=%s: %s", user.user_id, number, refusal)
            return _fields_error({"callback_number": refusal}, "number_not_allowed", refusal)
        if user.blocked or not user.callback_enabled:
            return _error(403, "callback_not_allowed", f"user {user.user_id} may not use callback")
        destination = req.destination.lstrip("+") if req.destination else None
        if not idempotency_key:
            response, _ = await accept(user, number, destination, callback_id_for(user.user_id, None))
            return response
        key = (user.user_id, idempotency_key)
        claim, known_id = await remembered.claim(key, _fingerprint(number, destination), clock)
        if claim is _Claim.CONFLICT:
            return _error(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            )
        if claim is _Claim.REPLAY:
            assert known_id is not None
            log.info("web callback %s: retry with the same Idempotency-Key, not published again", known_id)
            return _accepted(known_id, replayed=True)
        accepted_id: str | None = None
        try:
            response, accepted_id = await accept(
                user, number, destination, callback_id_for(user.user_id, idempotency_key)
            )
            return response
        finally:
            # also on cancellation or a crash: a retry waiting on this key must not wait forever
            remembered.settle(key, accepted_id)

    async def accept(
        user: User, number: str, destination: str | None, callback_id: str
    ) -> tuple[web.Response, str | None]:
        """Rate limits, then publish: (202, the callback id), or (429 or 503, None)."""
        decision = acquire([(limits.per_user, user.user_id), (limits.per_number, number)], clock())
        if not decision.allowed:
            log.info(
                "web callback rate-limited (%s) user=%s number=%s", decision.limited_by, user.user_id, number
            )
            return _error(
                429,
                "rate_limited",
                f"too many callback requests per {decision.limited_by}",
                headers=_retry_after(decision.retry_after_s),
            ), None
        initiation = CallbackInitiation(
            source=source,
            callback_id=callback_id,
            origin=InitiationOrigin.WEB,
            callback_number=number,
            destination=destination,
            user_id=user.user_id,
            received_at=utc_now(),
        )
        try:
            await asyncio.wait_for(
                publisher.publish(CALLBACK_REQUESTS.name, initiation.callback_id, initiation.to_bytes()),
                PUBLISH_TIMEOUT_S,
            )
        except (DeliveryFailed, TimeoutError) as exc:
            log.error(
                "web callback %s for user %s NOT published: %s", initiation.callback_id, user.user_id, exc
            )
            return _error(503, "unavailable", "the request could not be queued; retry later"), None
        log.info(
            "web callback %s accepted: user=%s number=%s destination=%s",
            initiation.callback_id,
            user.user_id,
            number,
            initiation.destination or "-",
        )
        return _accepted(initiation.callback_id), initiation.callback_id

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "users": len(directory)})

    async def close_pool(_: web.Application) -> None:
        pool.close()

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
    app.router.add_post("/v1/callbacks", create_callback)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/healthz", health)
    app.on_cleanup.append(close_pool)
    return app


def follow_users(directory: UserDirectory, feed: ReferenceFeed) -> ReferenceFollower:
    """A follower (not started) that keeps ``directory`` equal to the users ``feed`` reads."""

    def on_change(data: ReferenceData) -> None:
        if directory.sync(data):
            log.info("web users: %d can call the API (reference version %d)", len(directory), data.version)

    return ReferenceFollower(feed, on_change, name="web-users")


@dataclass(frozen=True)
class WebOptions:
    host: str
    port: int
    config_file: Path | None
    user_per_minute: float
    number_per_minute: float
    min_number_digits: int = DEFAULT_MIN_NUMBER_DIGITS
    emergency_numbers: tuple[str, ...] = DEFAULT_EMERGENCY_NUMBERS
    failed_logins_per_user: float = 10.0
    failed_logins_per_address: float = 30.0
    #: threads hashing passwords (None: half the CPUs, 1 to 4)
    hash_threads: int | None = None


def run_web(options: WebOptions) -> int:
    from producers.kafka_out import KafkaPublisher
    from producers.reference_data import load_config
    from schemas.topics import AUTH_WEB_CREDENTIALS, CONFIG_USERS

    directory = UserDirectory()
    follower = None
    if options.config_file is not None:
        directory.sync(ReferenceData.from_carrier_config(load_config(options.config_file)))
    else:
        # users and their logins are all the API needs: other config topics would only cost time
        topics = (CONFIG_USERS.name, AUTH_WEB_CREDENTIALS.name)
        follower = follow_users(directory, ReferenceFeed(topics, purpose="web-users"))
        if not follower.start():
            log.warning("%s not read to the end yet; serving with %d users", "/".join(topics), len(directory))
    log.info("web callback API starting with %d users", len(directory))
    publisher = KafkaPublisher("callback-web")
    limits = RateLimits.per_minute(
        options.user_per_minute,
        options.number_per_minute,
        failed_logins_per_user=options.failed_logins_per_user,
        failed_logins_per_address=options.failed_logins_per_address,
    )
    app = build_app(
        directory,
        publisher,
        limits,
        numbers=NumberPolicy.of(options.min_number_digits, options.emergency_numbers),
        hash_pool=HashPool(options.hash_threads),
    )
    try:
        # run_app calls ``print`` once the socket is bound: only then is the API really up
        web.run_app(
            app,
            host=options.host,
            port=options.port,
            print=lambda _text: log.info(
                "web callback API listening on http://%s:%d", options.host, options.port
            ),
        )
    finally:
        if follower is not None:
            follower.stop()
        publisher.close()
    return 0
