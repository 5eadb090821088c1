"""The web callback API (the seed's WEB callback): ``POST /v1/callbacks`` -> ``callback.requests``.

Order of checks, each with a JSON error: body is JSON (422) -> credentials (401) -> fields (422) ->
the user may use callback (403) -> rate limits per user and per number (429 + Retry-After) -> the
initiation is on Kafka (acks=all; 503 if not) -> ``202 {"callback_id"}``.

The callback id is random, or derived from the user and an ``Idempotency-Key`` header so a client's
retry does not ring anyone twice (the processors drop an initiation whose id they already know).

Who may call comes from the same reference view as everywhere else (``callback.reference``):
built from the carrier file with ``--config``, or else read from ``config.users`` and followed in
a background thread, so a user added, changed or deleted (tombstone) there is honoured without a
restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callback.reference import ReferenceData
from callback.reference_feed import ReferenceFeed, ReferenceFollower
from producers.auth import UserDirectory
from producers.kafka_out import DeliveryFailed, Publisher
from producers.metrics import WEB_REQUESTS
from producers.openapi import OPENAPI
from producers.rate_limit import TokenBuckets, acquire
from schemas.callback import CallbackInitiation, InitiationOrigin
from schemas.envelope import utc_now
from schemas.reference import User
from schemas.topics import CALLBACK_REQUESTS

log = logging.getLogger(__name__)

_NUMBER = r"^\+?[0-9]{1,20}$"
PUBLISH_TIMEOUT_S = 15.0


class CallbackRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    callback_number: str = Field(pattern=_NUMBER)
    destination: str | None = Field(default=None, pattern=_NUMBER)
    username: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, max_length=1024)
    api_key: str | None = Field(default=None, max_length=1024)


@dataclass
class RateLimits:
    per_user: TokenBuckets
    per_number: TokenBuckets

    @classmethod
    def per_minute(cls, user: float, number: float) -> RateLimits:
        return cls(TokenBuckets("user", per_minute=user), TokenBuckets("number", per_minute=number))


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    WEB_REQUESTS.labels(str(status)).inc()
    headers = extra.pop("headers", None)
    return web.json_response({"error": code, "message": message, **extra}, status=status, headers=headers)


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


def _authenticate(directory: UserDirectory, request: web.Request, body: dict[str, Any]) -> User | None:
    username, password, api_key = _header_credentials(request)
    username = username or _str(body.get("username"))
    password = password if password is not None else _str(body.get("password"))
    api_key = api_key or _str(body.get("api_key"))
    if api_key:
        return directory.by_api_key(api_key)
    if username and password is not None:
        return directory.by_password(username, password)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def callback_id_for(user_id: str, idempotency_key: str | None) -> str:
    if idempotency_key:
        return "web-" + hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()[:32]
    return "web-" + uuid.uuid4().hex


def build_app(
    directory: UserDirectory,
    publisher: Publisher,
    limits: RateLimits,
    *,
    clock: Callable[[], float] = time.monotonic,
    source: str = "web",
) -> web.Application:
    async def create_callback(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(422, "malformed_json", "the body must be a JSON object")
        if not isinstance(body, dict):
            return _error(422, "malformed_json", "the body must be a JSON object")
        user = _authenticate(directory, request, body)
        if user is None:
            log.info("web callback refused: bad or missing credentials from %s", request.remote)
            return _error(
                401,
                "unauthenticated",
                "valid web credentials or an API key are required",
                headers={"WWW-Authenticate": 'Basic realm="callback"'},
            )
        try:
            req = CallbackRequestBody.model_validate(body)
        except ValidationError as exc:
            fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
            return _error(422, "invalid_request", "some fields are invalid", fields=fields)
        if user.blocked or not user.callback_enabled:
            return _error(403, "callback_not_allowed", f"user {user.user_id} may not use callback")
        number = req.callback_number.lstrip("+")
        decision = acquire([(limits.per_user, user.user_id), (limits.per_number, number)], clock())
        if not decision.allowed:
            retry = max(1, int(decision.retry_after_s + 0.999))
            log.info(
                "web callback rate-limited (%s) user=%s number=%s", decision.limited_by, user.user_id, number
            )
            return _error(
                429,
                "rate_limited",
                f"too many callback requests per {decision.limited_by}",
                headers={"Retry-After": str(retry)},
            )
        initiation = CallbackInitiation(
            source=source,
            callback_id=callback_id_for(user.user_id, request.headers.get("Idempotency-Key")),
            origin=InitiationOrigin.WEB,
            callback_number=number,
            destination=req.destination.lstrip("+") if req.destination else None,
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
            return _error(503, "unavailable", "the request could not be queued; retry later")
        log.info(
            "web callback %s accepted: user=%s number=%s destination=%s",
            initiation.callback_id,
            user.user_id,
            number,
            initiation.destination or "-",
        )
        WEB_REQUESTS.labels("202").inc()
        return web.json_response({"callback_id": initiation.callback_id, "status": "accepted"}, status=202)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "users": len(directory)})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/v1/callbacks", create_callback)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/healthz", health)
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


def run_web(options: WebOptions) -> int:
    from producers.kafka_out import KafkaPublisher
    from producers.reference_data import load_config
    from schemas.topics import CONFIG_USERS

    directory = UserDirectory()
    follower = None
    if options.config_file is not None:
        directory.sync(ReferenceData.from_carrier_config(load_config(options.config_file)))
    else:
        # users are all the API needs: the other config topics would only cost start-up time
        follower = follow_users(directory, ReferenceFeed((CONFIG_USERS.name,), purpose="web-users"))
        if not follower.start():
            log.warning("config.users not read to its end yet; serving with %d users", len(directory))
    log.info("web callback API starting with %d users", len(directory))
    publisher = KafkaPublisher("callback-web")
    app = build_app(
        directory, publisher, RateLimits.per_minute(options.user_per_minute, options.number_per_minute)
    )
    try:
        # run_app calls ``print`` once the socket is bound: only then is the API really up
        web.run_app(app, host=options.host, port=options.port,
                    print=lambda _text: log.info("web callback API listening on http://%s:%d",
                                                 options.host, options.port))
    finally:
        if follower is not None:
            follower.stop()
        publisher.close()
    return 0
