"""The web callback API in-process: happy path, auth failures, validation errors, limits, OpenAPI,
and what keeps it from being stalled or confusing: password hashing off the event loop with bounded
concurrency, failed-login limits, idempotent retries, JSON errors for every status, the callback
number policy (minimum length, emergency numbers), deleted users locked out without a restart.

Kafka is replaced by an in-memory publisher here (unit level); tests/integration/test_web_kafka.py
runs the same app against the real broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from callback.reference import ReferenceData
from producers.auth import HashPool, UserDirectory
from producers.kafka_out import DeliveryFailed
from producers.openapi import OPENAPI, render_openapi
from producers.web import (
    DEFAULT_EMERGENCY_NUMBERS,
    IdempotencyCache,
    NumberPolicy,
    RateLimits,
    build_app,
    client_address,
    follow_users,
)
from schemas.callback import CallbackInitiation
from schemas.carrier_config import load_carrier_config
from schemas.reference import User

REPO = Path(__file__).resolve().parents[2]
CARRIER = load_carrier_config(REPO / "examples" / "carrier.yaml")
#: the sample's users as config.users carries them, and their logins (auth.web_credentials)
USERS = [u.user() for u in CARRIER.users]
LOGINS = [u.web_credentials() for u in CARRIER.users]
ALICE_KEY = "demo-key-alice-7f3b2c"
NUMBER = "2348031234567"


class MemoryPublisher:
    def __init__(self, fail: bool = False, *, fail_times: int = 0, delay_s: float = 0.0) -> None:
        self.records: list[tuple[str, str, bytes]] = []
        self.fail = fail
        self.fail_times = fail_times
        self.delay_s = delay_s

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail or self.fail_times > 0:
            self.fail_times -= 1
            raise DeliveryFailed("broker down")
        self.records.append((topic, key, value))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def call(requests, *, publisher=None, limits=None, clock=None, directory=None, **app_kwargs):
    """Run ``requests`` against a fresh app, in order; return responses as dicts. Each request is
    (method, path, kwargs); a bare callable in the list runs between two requests (e.g. a clock
    step)."""
    publisher = publisher or MemoryPublisher()
    app = build_app(
        directory or UserDirectory(USERS, LOGINS),
        publisher,
        limits or RateLimits.per_minute(60, 60),
        clock=clock or Clock(),
        **app_kwargs,
    )

    async def run():
        out = []
        async with TestClient(TestServer(app)) as client:
            for item in requests:
                if callable(item):
                    item()
                    continue
                method, path, kwargs = item
                resp = await client.request(method, path, **kwargs)
                out.append(await as_dict(resp))
        return out

    return asyncio.run(run()), publisher


async def as_dict(resp) -> dict[str, Any]:
    text = await resp.text()
    return {"status": resp.status, "headers": dict(resp.headers), "json": json.loads(text) if text else None}


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
            post({"callback_number": "2348030000111"}, h),
            post({"callback_number": "2348030000111"}, h),
            post({"callback_number": "2348030000111"}, h),  # third call to the same number: per number
            post({"callback_number": "2348030000222"}, h),  # third request of alice: still within 3
            post({"callback_number": "2348030000333"}, h),
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
    app_users = UserDirectory(blocked, LOGINS)

    async def run():
        async with TestClient(
            TestServer(build_app(app_users, MemoryPublisher(), RateLimits.per_minute(9, 9)))
        ) as c:
            r = await c.post(
                "/v1/callbacks", json={"callback_number": NUMBER}, headers={"X-API-Key": ALICE_KEY}
            )
            return r.status, await r.json()

    status, body = asyncio.run(run())
    assert status == 403 and body["error"] == "callback_not_allowed"


def test_kafka_down_is_503_not_202():
    (resp,), _ = call(
        [post({"callback_number": NUMBER}, {"X-API-Key": ALICE_KEY})], publisher=MemoryPublisher(True)
    )
    assert resp["status"] == 503 and resp["json"]["error"] == "unavailable"


def test_idempotency_key_gives_the_same_callback_id():
    h = {"X-API-Key": ALICE_KEY, "Idempotency-Key": "order-77"}
    responses, pub = call([post({"callback_number": NUMBER}, h), post({"callback_number": NUMBER}, h)])
    assert responses[0]["json"]["callback_id"] == responses[1]["json"]["callback_id"]
    assert len(pub.records) == 1


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
                r = await c.post("/v1/callbacks", json={"callback_number": NUMBER}, headers=headers)
                return r.status

            statuses.append(await status({"X-API-Key": ALICE_KEY}))
            applied.clear()
            feed.push("config.users", "alice", None)  # the tombstone
            assert await asyncio.to_thread(applied.wait, 5), "the follower did not apply the tombstone"
            statuses.append(await status({"X-API-Key": ALICE_KEY}))
            statuses.append(await status(basic("alice", "alice-web-secret")))
            statuses.append(await status(basic("bob", "bob-web-secret")))
            applied.clear()
            feed.push("auth.web_credentials", "bob", None)  # bob stays a user, without a web login
            assert await asyncio.to_thread(applied.wait, 5), "the follower did not apply the tombstone"
            statuses.append(await status(basic("bob", "bob-web-secret")))
        return statuses

    try:
        statuses = asyncio.run(run())
    finally:
        follower.stop()
    assert statuses == [202, 401, 401, 202, 401]
    assert feed.closed, "the follower closes its feed when stopped"


# --- item 5: password hashing never stalls the event loop; failed logins are limited ----------------


@pytest.mark.parametrize("every_one_hashed", [False, True], ids=["defaults", "all-40-hashed"])
def test_forty_parallel_wrong_passwords_do_not_stall_the_health_check(every_one_hashed):
    """The real 200k-round pbkdf2 hashes of the sample users, 40 wrong passwords at once (what made
    ``/healthz`` take 4.25 s when the hash ran on the event loop): the health check answers within
    a functional bound throughout, and every wrong password gets a JSON refusal. With the defaults
    most are refused at once (pool full, 503); with room for all 40 and no login limit, every one is
    hashed (on the pool's threads) and the health check is still fast."""
    if every_one_hashed:
        limits = RateLimits.per_minute(60, 60, failed_logins_per_user=1000, failed_logins_per_address=1000)
        app = build_app(
            UserDirectory(USERS, LOGINS), MemoryPublisher(), limits, hash_pool=HashPool(2, max_in_flight=40)
        )
    else:
        app = build_app(UserDirectory(USERS, LOGINS), MemoryPublisher(), RateLimits.per_minute(60, 60))

    async def run() -> tuple[list[dict[str, Any]], list[float]]:
        async with TestClient(TestServer(app)) as c:

            async def wrong(i: int) -> dict[str, Any]:
                user = ("alice", "bob", "mallory")[i % 3]
                body = {"callback_number": NUMBER}
                return await as_dict(await c.post("/v1/callbacks", json=body, headers=basic(user, f"x{i}")))

            attack = asyncio.gather(*(wrong(i) for i in range(40)))
            await asyncio.sleep(0.02)  # the attack is on the server now
            latencies: list[float] = []
            while not attack.done() or len(latencies) < 3:
                started = time.perf_counter()
                r = await c.get("/healthz")
                assert r.status == 200 and (await r.json())["status"] == "ok"
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
            return await attack, latencies

    responses, latencies = asyncio.run(run())
    assert max(latencies) < 0.5, f"/healthz took {max(latencies):.2f} s under 40 wrong passwords"
    statuses = {r["status"] for r in responses}
    assert statuses <= {401, 429, 503} and 401 in statuses, statuses
    if every_one_hashed:
        assert statuses == {401}
    assert all(r["headers"]["Content-Type"].startswith("application/json") for r in responses)
    assert all("Retry-After" in r["headers"] for r in responses if r["status"] in (429, 503))


class ThreadRecordingDirectory(UserDirectory):
    """Records the thread each password check runs on; can hold checks until released."""

    def __init__(self, users, hold: threading.Event | None = None) -> None:
        super().__init__(users, LOGINS)
        self.threads: list[str] = []
        self.hold = hold
        self.started = threading.Semaphore(0)

    def by_password(self, username: str, password: str) -> User | None:
        self.threads.append(threading.current_thread().name)
        self.started.release()
        if self.hold is not None:
            assert self.hold.wait(10)
        return super().by_password(username, password)


def test_the_password_is_checked_on_a_pool_thread_not_the_event_loop():
    directory = ThreadRecordingDirectory(USERS)
    (ok, bad), _ = call(
        [
            post({"callback_number": NUMBER}, basic("alice", "alice-web-secret")),
            post({"callback_number": NUMBER}, basic("alice", "no")),
        ],
        directory=directory,
    )
    assert (ok["status"], bad["status"]) == (202, 401)
    assert directory.threads and all(name.startswith("web-hash") for name in directory.threads)


def test_a_full_hash_pool_refuses_at_once_with_503_and_retry_after():
    hold = threading.Event()
    directory = ThreadRecordingDirectory(USERS, hold)
    app = build_app(
        directory, MemoryPublisher(), RateLimits.per_minute(60, 60), hash_pool=HashPool(1, max_in_flight=1)
    )

    async def run() -> tuple[dict[str, Any], float, dict[str, Any]]:
        async with TestClient(TestServer(app)) as c:
            body = {"callback_number": NUMBER}
            first = asyncio.create_task(
                c.post("/v1/callbacks", json=body, headers=basic("alice", "alice-web-secret"))
            )
            assert await asyncio.to_thread(directory.started.acquire, True, 5), "first check never started"
            started = time.perf_counter()
            second = await as_dict(
                await c.post("/v1/callbacks", json=body, headers=basic("bob", "bob-web-secret"))
            )
            refused_in = time.perf_counter() - started
            hold.set()
            return second, refused_in, await as_dict(await first)

    second, refused_in, first = asyncio.run(run())
    assert first["status"] == 202
    assert second["status"] == 503 and second["json"]["error"] == "busy"
    assert int(second["headers"]["Retry-After"]) >= 1 and refused_in < 0.5


def test_wrong_passwords_lock_the_user_out_with_429_until_the_bucket_refills():
    clock = Clock()
    limits = RateLimits.per_minute(60, 60, failed_logins_per_user=3, failed_logins_per_address=100)
    body = {"callback_number": NUMBER}

    def later() -> None:
        clock.t += 21  # one failed login is forgiven every 20 s

    responses, pub = call(
        [
            post(body, basic("alice", "wrong-1")),
            post(body, basic("alice", "wrong-2")),
            post(body, basic("alice", "wrong-3")),
            post(body, basic("alice", "alice-web-secret")),  # locked: even the right password
            post({**body, "username": "alice", "password": "wrong-4"}),  # body credentials count too
            post(body, basic("bob", "bob-web-secret")),  # another user is not affected
            post(body, {"X-API-Key": ALICE_KEY}),  # nor alice's API key
            later,
            post(body, basic("alice", "alice-web-secret")),
        ],
        limits=limits,
        clock=clock,
    )
    assert [r["status"] for r in responses] == [401, 401, 401, 429, 429, 202, 202, 202]
    locked = responses[3]
    assert locked["json"]["error"] == "too_many_failed_logins" and "user" in locked["json"]["message"]
    assert locked["headers"]["Retry-After"] == "20"
    assert len(pub.records) == 3


def test_wrong_passwords_are_limited_per_client_address_across_usernames():
    limits = RateLimits.per_minute(60, 60, failed_logins_per_user=100, failed_logins_per_address=2)
    body = {"callback_number": NUMBER}
    responses, _ = call(
        [
            post(body, basic("alice", "wrong")),
            post(body, basic("bob", "wrong")),
            post(body, basic("mallory", "guess")),  # unknown usernames count as well
            post(body, basic("bob", "bob-web-secret")),
        ],
        limits=limits,
    )
    assert [r["status"] for r in responses] == [401, 401, 429, 429]
    assert "address" in responses[2]["json"]["message"]


@pytest.mark.parametrize(
    "remote,key",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same subscriber line
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
    ],
)
def test_failed_logins_are_counted_per_ipv4_address_and_per_ipv6_64(remote, key):
    assert client_address(remote) == key


def test_right_passwords_do_not_use_up_the_failed_login_allowance():
    limits = RateLimits.per_minute(60, 60, failed_logins_per_user=1, failed_logins_per_address=1)
    body = {"callback_number": NUMBER}
    right = post(body, basic("alice", "alice-web-secret"))
    responses, _ = call([right, right, right, post(body, basic("alice", "no")), right], limits=limits)
    assert [r["status"] for r in responses] == [202, 202, 202, 401, 429]


# --- item 6: Idempotency-Key -----------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer_publishes_nothing_and_costs_no_token():
    limits = RateLimits.per_minute(user=1, number=60)  # one accepted request per minute for alice
    h = {"X-API-Key": ALICE_KEY, "Idempotency-Key": "order-78"}
    body = {"callback_number": NUMBER, "destination": "34911222333"}
    responses, pub = call(
        [
            post(body, h),
            post(body, h),
            post({**body, "callback_number": "+" + NUMBER}, h),  # the same request, written otherwise
            post({"callback_number": NUMBER}, h),  # another body under the same key
            post(body, {"X-API-Key": ALICE_KEY}),  # no key: alice's one token went to the first
        ],
        limits=limits,
    )
    assert [r["status"] for r in responses] == [202, 202, 202, 409, 429]
    first_id = responses[0]["json"]["callback_id"]
    assert [r["json"]["callback_id"] for r in responses[1:3]] == [first_id, first_id]
    assert responses[1]["headers"]["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in responses[0]["headers"]
    conflict = responses[3]
    assert conflict["json"]["error"] == "idempotency_key_reused" and conflict["json"]["message"]
    assert [key for _, key, _ in pub.records] == [first_id], "published once, under the first id"


def test_idempotency_keys_are_per_user():
    body = {"callback_number": NUMBER}
    responses, pub = call(
        [
            post(body, {"X-API-Key": ALICE_KEY, "Idempotency-Key": "k"}),
            post(
                {"callback_number": "2348039999999"},
                {**basic("bob", "bob-web-secret"), "Idempotency-Key": "k"},
            ),
        ]
    )
    assert [r["status"] for r in responses] == [202, 202]
    assert responses[0]["json"]["callback_id"] != responses[1]["json"]["callback_id"]
    assert len(pub.records) == 2


def test_a_refused_first_attempt_is_not_remembered_so_its_retry_is_published():
    h = {"X-API-Key": ALICE_KEY, "Idempotency-Key": "order-79"}
    responses, pub = call(
        [post({"callback_number": NUMBER}, h), post({"callback_number": NUMBER}, h)],
        publisher=MemoryPublisher(fail_times=1),
    )
    assert [r["status"] for r in responses] == [503, 202]
    assert [key for _, key, _ in pub.records] == [responses[1]["json"]["callback_id"]]


def test_concurrent_retries_with_one_key_wait_for_the_first_and_publish_once():
    publisher = MemoryPublisher(delay_s=0.2)
    app = build_app(UserDirectory(USERS, LOGINS), publisher, RateLimits.per_minute(60, 60))

    async def run() -> list[dict[str, Any]]:
        async with TestClient(TestServer(app)) as c:
            h = {"X-API-Key": ALICE_KEY, "Idempotency-Key": "order-80"}

            async def one() -> dict[str, Any]:
                return await as_dict(
                    await c.post("/v1/callbacks", json={"callback_number": NUMBER}, headers=h)
                )

            return list(await asyncio.gather(*(one() for _ in range(5))))

    responses = asyncio.run(run())
    assert [r["status"] for r in responses] == [202] * 5
    assert len({r["json"]["callback_id"] for r in responses}) == 1
    assert len(publisher.records) == 1


@pytest.mark.parametrize("key", ["", "k" * 129, "tab\there"])
def test_an_empty_overlong_or_unprintable_idempotency_key_is_422(key):
    (resp,), pub = call([post({"callback_number": NUMBER}, {"X-API-Key": ALICE_KEY, "Idempotency-Key": key})])
    assert resp["status"] == 422 and "Idempotency-Key" in resp["json"]["fields"]
    assert pub.records == []


def test_remembered_keys_are_bounded_in_number_and_age():
    async def run() -> list[str]:
        cache = IdempotencyCache(max_keys=2, ttl_s=60)
        clock = Clock()
        outcomes = []
        for key in ("a", "b", "c"):  # "a" is pushed out by "c"
            claim, _ = await cache.claim(("u", key), "fp", clock)
            cache.settle(("u", key), f"id-{key}")
        assert len(cache) == 2
        for key in ("b", "a"):  # "b" is still known; "a" is new again (and now pushes out "b")
            claim, known = await cache.claim(("u", key), "fp", clock)
            outcomes.append(f"{key}:{claim.value}:{known}")
            if known is None:
                cache.settle(("u", key), f"id-{key}")
        clock.t += 61  # everything is too old now
        claim, _ = await cache.claim(("u", "c"), "fp", clock)
        outcomes.append(f"c:{claim.value}")
        assert len(cache) == 1
        return outcomes

    assert asyncio.run(run()) == ["b:replay:id-b", "a:owner:None", "c:owner"]


# --- item 7: JSON for every error; callback number policy -------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000, '{"callback_number": ' + "[" * 5000],
)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ALICE_KEY}])
def test_deeply_nested_json_is_422_not_a_500(raw, headers):
    (resp,), pub = call([post(raw=raw, headers=headers)])
    assert resp["status"] == 422 and resp["json"]["error"] == "malformed_json", resp
    assert resp["headers"]["Content-Type"].startswith("application/json")
    assert pub.records == []


def test_a_body_over_64_kib_is_413_as_json():
    (resp,), pub = call(
        [post({"callback_number": NUMBER, "destination": "1" * 70_000}, {"X-API-Key": ALICE_KEY})]
    )
    assert resp["status"] == 413 and resp["json"]["error"] == "body_too_large" and resp["json"]["message"]
    assert resp["headers"]["Content-Type"].startswith("application/json")
    assert pub.records == []


def test_wrong_methods_and_unknown_paths_are_json_errors():
    responses, _ = call(
        [("GET", "/v1/callbacks", {}), ("DELETE", "/healthz", {}), ("GET", "/v2/nothing", {})]
    )
    assert [(r["status"], r["json"]["error"]) for r in responses] == [
        (405, "method_not_allowed"),
        (405, "method_not_allowed"),
        (404, "not_found"),
    ]
    assert responses[0]["headers"]["Allow"] == "POST"
    assert all(r["headers"]["Content-Type"].startswith("application/json") for r in responses)


def test_the_openapi_document_lists_every_error_status_with_the_error_schema():
    responses = OPENAPI["paths"]["/v1/callbacks"]["post"]["responses"]
    assert {"401", "403", "405", "409", "413", "422", "429", "503"} <= set(responses)
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, status
    assert "Allow" in responses["405"]["headers"] and "Retry-After" in responses["503"]["headers"]


def test_real_405_and_413_answers_are_what_the_openapi_document_says():
    """The bodies and headers aiohttp's own errors come back with, checked against docs/openapi.json
    (the committed document) with a JSON Schema validator, not against our expectations."""
    from jsonschema import Draft202012Validator

    document = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    error_schema = Draft202012Validator(document["components"]["schemas"]["Error"])
    too_big = post({"callback_number": NUMBER, "destination": "1" * 70_000}, {"X-API-Key": ALICE_KEY})
    asked = [
        ("/v1/callbacks", "post", "413", too_big),
        ("/v1/callbacks", "post", "405", ("GET", "/v1/callbacks", {})),
        ("/v1/callbacks", "post", "405", ("PUT", "/v1/callbacks", {"json": {}})),
        ("/healthz", "get", "405", ("POST", "/healthz", {})),
        ("/openapi.json", "get", "405", ("DELETE", "/openapi.json", {})),
    ]
    responses, _ = call([request for *_, request in asked])
    for (path, method, status, _), resp in zip(asked, responses, strict=True):
        documented = document["paths"][path][method]["responses"][status]
        assert str(resp["status"]) == status, (path, resp)
        assert resp["headers"]["Content-Type"].startswith("application/json")
        assert documented["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        error_schema.validate(resp["json"])
        assert resp["json"]["error"] in documented["description"], (resp["json"], documented["description"])
        for header in documented.get("headers", {}):
            assert resp["headers"][header], (path, header)


@pytest.mark.parametrize(
    "number",
    [
        "112",
        "+911",
        "999",
        "000",
        "08",
        "110",
        "118",
        "119",
        "100",
        "101",
        "102",
        "103",
        "234112",
        "+44999",
        "12345",
    ],
)
def test_emergency_and_too_short_callback_numbers_are_422(number):
    (resp,), pub = call([post({"callback_number": number}, {"X-API-Key": ALICE_KEY})])
    assert resp["status"] == 422 and resp["json"]["error"] == "number_not_allowed", resp
    reason = resp["json"]["fields"]["callback_number"]
    assert resp["json"]["message"] == reason
    assert ("emergency" in reason) if number.lstrip("+") in DEFAULT_EMERGENCY_NUMBERS else True
    assert pub.records == []


def test_the_number_policy_is_configurable():
    policy = NumberPolicy.of(3, ["5550", "+5551", " "])
    assert policy.emergency_numbers == {"5550", "5551"}
    assert policy.refusal("112") is None, "a replaced list no longer contains 112"
    assert "emergency" in (policy.refusal("5550") or "") and "emergency" in (policy.refusal("495551") or "")
    assert "at least 3 digits" in (policy.refusal("12") or "")
    assert policy.refusal("123456789055501") is None, "a long number merely ending in it is fine"
    responses, _ = call(
        [
            post({"callback_number": "112"}, {"X-API-Key": ALICE_KEY}),
            post({"callback_number": "5550"}, {"X-API-Key": ALICE_KEY}),
        ],
        numbers=policy,
    )
    assert [r["status"] for r in responses] == [202, 422]
    with pytest.raises(ValueError):
        NumberPolicy.of(6, ["11a"])


def test_callback_web_takes_the_number_policy_and_login_limits_as_options(monkeypatch):
    import typer

    from producers import cli, web

    app = typer.Typer()  # only the producers' commands: the root app's error handling is not tested here
    cli.register(app)

    seen: list[web.WebOptions] = []
    monkeypatch.setattr(web, "run_web", lambda options: seen.append(options) or 0)
    args = [
        "web",
        "--min-number-digits",
        "8",
        "--emergency-numbers",
        "112, +5550",
        "--login-failures-per-user",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert (options.min_number_digits, options.emergency_numbers, options.failed_logins_per_user) == (
        8,
        ("112", "+5550"),
        4.0,
    )
    assert CliRunner().invoke(app, ["web"]).exit_code == 0
    assert seen[1].emergency_numbers == DEFAULT_EMERGENCY_NUMBERS and seen[1].min_number_digits == 6
    assert CliRunner().invoke(app, ["web", "--emergency-numbers", "call-911"]).exit_code == 2
