"""The web callback API in-process: happy path, auth failures, validation errors, limits, OpenAPI.

Kafka is replaced by an in-memory publisher here (unit level); tests/integration/test_web_kafka.py
runs the same app against the real broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callback.reference import ReferenceData
from producers.auth import UserDirectory
from producers.kafka_out import DeliveryFailed
from producers.openapi import render_openapi
from producers.web import RateLimits, build_app, follow_users
from schemas.callback import CallbackInitiation
from schemas.carrier_config import load_carrier_config

REPO = Path(__file__).resolve().parents[2]
USERS = load_carrier_config(REPO / "examples" / "carrier.yaml").users
ALICE_KEY = "demo-key-alice-7f3b2c"


class MemoryPublisher:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[tuple[str, str, bytes]] = []
        self.fail = fail

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self.fail:
            raise DeliveryFailed("broker down")
        self.records.append((topic, key, value))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def call(requests, *, publisher=None, limits=None, clock=None):
    """Run ``requests`` (list of (method, path, kwargs)) against a fresh app; return responses as dicts."""
    publisher = publisher or MemoryPublisher()
    app = build_app(
        UserDirectory(USERS), publisher, limits or RateLimits.per_minute(60, 60), clock=clock or Clock()
    )

    async def run():
        out = []
        async with TestClient(TestServer(app)) as client:
            for method, path, kwargs in requests:
                resp = await client.request(method, path, **kwargs)
                text = await resp.text()
                out.append(
                    {
                        "status": resp.status,
                        "headers": dict(resp.headers),
                        "json": json.loads(text) if text else None,
                    }
                )
        return out

    return asyncio.run(run()), publisher


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(body=None, headers=None, raw: str | None = None):
    kwargs = {"headers": headers or {}}
    if raw is not None:
        kwargs["data"] = raw
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
    else:
        kwargs["json"] = body
    return ("POST", "/v1/callbacks", kwargs)


def test_happy_path_with_basic_auth_publishes_a_web_initiation():
    (resp,), pub = call(
        [
            post(
                {"callback_number": "+2348031234567", "destination": "34911222333"},
                basic("alice", "alice-web-secret"),
            )
        ]
    )
    assert resp["status"] == 202 and resp["json"]["status"] == "accepted"
    topic, key, value = pub.records[0]
    init = CallbackInitiation.model_validate_json(value)
    assert (topic, key) == ("callback.requests", resp["json"]["callback_id"])
    assert (init.callback_id, init.origin.value, init.callback_number, init.destination, init.user_id) == (
        key,
        "web",
        "2348031234567",
        "34911222333",
        "alice",
    )


@pytest.mark.parametrize(
    "headers,body_extra",
    [
        ({"X-API-Key": ALICE_KEY}, {}),
        ({"Authorization": f"Bearer {ALICE_KEY}"}, {}),
        ({}, {"api_key": ALICE_KEY}),
        ({}, {"username": "alice", "password": "alice-web-secret"}),
    ],
)
def test_every_credential_form_is_accepted(headers, body_extra):
    (resp,), pub = call([post({"callback_number": "2348031234567", **body_extra}, headers)])
    assert resp["status"] == 202, resp
    assert CallbackInitiation.model_validate_json(pub.records[0][2]).user_id == "alice"


@pytest.mark.parametrize(
    "headers,body_extra",
    [
        ({}, {}),
        (basic("alice", "wrong"), {}),
        (basic("mallory", "alice-web-secret"), {}),
        ({"X-API-Key": "demo-key-alice-7f3b2d"}, {}),
        ({"Authorization": "Basic !!!notbase64"}, {}),
        ({}, {"username": "chidi", "password": ""}),  # a user without web credentials
    ],
)
def test_auth_failures_are_401_with_json_and_publish_nothing(headers, body_extra):
    (resp,), pub = call([post({"callback_number": "2348031234567", **body_extra}, headers)])
    assert resp["status"] == 401 and resp["json"]["error"] == "unauthenticated"
    assert resp["headers"]["WWW-Authenticate"].startswith("Basic")
    assert pub.records == []


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "callback_number"),
        ({"callback_number": "12ab"}, "callback_number"),
        ({"callback_number": "1" * 21}, "callback_number"),
        ({"callback_number": "2348031234567", "destination": "x"}, "destination"),
        ({"callback_number": "2348031234567", "colour": "red"}, "colour"),
        ({"callback_number": 2348031234567}, "callback_number"),
    ],
)
def test_validation_errors_are_422_naming_the_field(body, field):
    (resp,), pub = call([post(body, {"X-API-Key": ALICE_KEY})])
    assert resp["status"] == 422 and resp["json"]["error"] == "invalid_request"
    assert field in resp["json"]["fields"]
    assert pub.records == []


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"'])
def test_malformed_body_is_422(raw):
    (resp,), _ = call([post(raw=raw, headers={"X-API-Key": ALICE_KEY})])
    assert resp["status"] == 422 and resp["json"]["error"] == "malformed_json"


def test_rate_limit_per_user_and_per_number_with_retry_after():
    clock = Clock()
    limits = RateLimits.per_minute(user=3, number=2)
    h = {"X-API-Key": ALICE_KEY}
    responses, pub = call(
        [
            post({"callback_number": "111"}, h),
            post({"callback_number": "111"}, h),
            post({"callback_number": "111"}, h),  # third call to the same number: per number
            post({"callback_number": "222"}, h),  # third request of alice: still within 3
            post({"callback_number": "333"}, h),
        ],  # fourth: per user
        limits=limits,
        clock=clock,
    )
    assert [r["status"] for r in responses] == [202, 202, 429, 202, 429]
    assert "number" in responses[2]["json"]["message"] and "user" in responses[4]["json"]["message"]
    assert int(responses[2]["headers"]["Retry-After"]) >= 1
    assert len(pub.records) == 3


def test_blocked_user_is_403(tmp_path):
    blocked = [u.model_copy(update={"blocked": True}) if u.user_id == "alice" else u for u in USERS]
    app_users = UserDirectory(blocked)

    async def run():
        async with TestClient(
            TestServer(build_app(app_users, MemoryPublisher(), RateLimits.per_minute(9, 9)))
        ) as c:
            r = await c.post("/v1/callbacks", json={"callback_number": "1"}, headers={"X-API-Key": ALICE_KEY})
            return r.status, await r.json()

    status, body = asyncio.run(run())
    assert status == 403 and body["error"] == "callback_not_allowed"


def test_kafka_down_is_503_not_202():
    (resp,), _ = call(
        [post({"callback_number": "1"}, {"X-API-Key": ALICE_KEY})], publisher=MemoryPublisher(True)
    )
    assert resp["status"] == 503 and resp["json"]["error"] == "unavailable"


def test_idempotency_key_gives_the_same_callback_id():
    h = {"X-API-Key": ALICE_KEY, "Idempotency-Key": "order-77"}
    responses, _ = call([post({"callback_number": "1"}, h), post({"callback_number": "1"}, h)])
    assert responses[0]["json"]["callback_id"] == responses[1]["json"]["callback_id"]


def test_openapi_is_served_and_committed_copy_matches():
    (resp,), _ = call([("GET", "/openapi.json", {})])
    assert resp["status"] == 200 and "/v1/callbacks" in resp["json"]["paths"]
    committed = (REPO / "docs" / "openapi.json").read_text()
    assert committed == render_openapi(), "run `callback web --export-openapi docs/openapi.json`"
    assert json.loads(committed) == resp["json"]


class ScriptedFeed:
    """Stands in for ``ReferenceFeed`` (no Kafka): ``load`` folds the sample carrier, ``poll``
    folds what the test pushes, as records of the config topics would arrive."""

    def __init__(self) -> None:
        self.data = ReferenceData()
        self.pending: queue.Queue[tuple[str, str, bytes | None]] = queue.Queue()
        self.closed = False

    def load(self) -> ReferenceData:
        for topic, key, record in load_carrier_config(REPO / "examples" / "carrier.yaml").records():
            self.data.apply(topic, key, record.model_dump_json().encode())
        return self.data

    def poll(self, timeout_s: float = 0.0) -> int:
        try:
            topic, key, value = self.pending.get(timeout=timeout_s)
        except queue.Empty:
            return 0
        self.data.apply(topic, key, value)
        return 1

    def push(self, topic: str, key: str, value: bytes | None) -> None:
        self.pending.put((topic, key, value))

    def close(self) -> None:
        self.closed = True


def test_a_user_deleted_from_config_users_can_no_longer_call():
    directory = UserDirectory()
    feed = ScriptedFeed()
    follower = follow_users(directory, feed)
    follower.poll_s = 0.05
    applied = threading.Event()
    on_change = follower.on_change

    def on_change_then_signal(data: ReferenceData) -> None:
        on_change(data)
        applied.set()

    follower.on_change = on_change_then_signal
    assert follower.start(wait_s=5)
    app = build_app(directory, MemoryPublisher(), RateLimits.per_minute(60, 60))

    async def run() -> list[int]:
        statuses = []
        async with TestClient(TestServer(app)) as c:

            async def status(headers: dict[str, str]) -> int:
                r = await c.post("/v1/callbacks", json={"callback_number": "1"}, headers=headers)
                return r.status

            statuses.append(await status({"X-API-Key": ALICE_KEY}))
            applied.clear()
            feed.push("config.users", "alice", None)  # the tombstone
            assert await asyncio.to_thread(applied.wait, 5), "the follower did not apply the tombstone"
            statuses.append(await status({"X-API-Key": ALICE_KEY}))
            statuses.append(await status(basic("alice", "alice-web-secret")))
            statuses.append(await status(basic("bob", "bob-web-secret")))
        return statuses

    try:
        statuses = asyncio.run(run())
    finally:
        follower.stop()
    assert statuses == [202, 401, 401, 202]
    assert feed.closed, "the follower closes its feed when stopped"
