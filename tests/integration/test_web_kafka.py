"""``callback web`` as a real process: a request lands on callback.requests in the real broker,
a retry with the same Idempotency-Key does not land twice, every refusal is a JSON error, wrong
passwords in parallel do not stall the health check, and a user deleted from config.users is
locked out without a restart."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka import Producer

from callback.kafka_io import producer_config
from infra.process import wait_until
from infra.rig import REPO_ROOT, CallbackProcess, KafkaTail, free_port
from producers.auth import api_key_digest
from schemas.callback import CallbackInitiation
from schemas.credentials import WebCredentials
from schemas.reference import User

pytestmark = pytest.mark.integration


def request(
    port: int,
    path: str,
    *,
    body: dict | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict, dict[str, str]]:
    """(status, JSON body, headers); every answer of the API, errors included, must be JSON."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=raw if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"].startswith("application/json"), (exc.code, exc.headers)
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def post(port: int, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    status, answer, _ = request(port, "/v1/callbacks", body=body, headers=headers)
    return status, answer


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_web_callback_reaches_kafka_and_refusals_do_not(stack, tmp_path):
    tail = KafkaTail(["callback.requests"])
    port = free_port()
    web = CallbackProcess(
        [
            "web",
            "--port",
            str(port),
            "--config",
            str(REPO_ROOT / "examples" / "carrier.yaml"),
            "--min-number-digits",
            "7",
        ],
        tmp_path / "web.log",
    ).start()
    try:
        web.wait_for_log("web callback API listening on", timeout=30)
        auth = basic_auth("bob", "bob-web-secret")
        status, body = post(port, {"callback_number": "+12125550142", "destination": "442071234567"}, auth)
        assert status == 202, body
        ((_, key, value),) = tail.wait_for(lambda r: r[1] == body["callback_id"], what="the web initiation")
        init = CallbackInitiation.model_validate(value)
        assert (init.origin.value, init.user_id, init.callback_number, init.destination, init.source) == (
            "web",
            "bob",
            "12125550142",
            "442071234567",
            "web",
        )

        # a retry with the same Idempotency-Key and body: the first answer, nothing published again
        keyed = {**auth, "Idempotency-Key": f"order-{uuid.uuid4().hex}"}
        first = post(port, {"callback_number": "12125550143"}, keyed)
        again = post(port, {"callback_number": "+12125550143"}, keyed)
        assert first[0] == again[0] == 202 and first[1]["callback_id"] == again[1]["callback_id"], (
            first,
            again,
        )
        assert post(port, {"callback_number": "12125550144"}, keyed)[0] == 409
        tail.wait_for(lambda r: r[1] == first[1]["callback_id"], what="the keyed initiation")

        assert post(port, {"callback_number": "12125550142"}, {"X-API-Key": "nope"})[0] == 401
        assert post(port, {"callback_number": "call me"}, auth)[0] == 422
        status, error = post(port, {"callback_number": "112"}, auth)
        assert (status, error["error"]) == (422, "number_not_allowed") and "emergency" in error["message"]
        status, error = post(port, {"callback_number": "123456"}, auth)  # --min-number-digits 7
        assert (status, error["error"]) == (422, "number_not_allowed") and "7 digits" in error["message"]
        too_deep = ("[" * 30_000 + "]" * 30_000).encode()
        status, error, _ = request(port, "/v1/callbacks", raw=too_deep, headers=auth)
        assert (status, error["error"]) == (422, "malformed_json")  # not a 500
        assert post(port, {"callback_number": "1" * 70_000}, auth)[0] == 413
        status, error, headers = request(port, "/v1/callbacks", method="GET")
        assert (status, error["error"], headers["Allow"]) == (405, "method_not_allowed", "POST")
        tail.poll(1.0)
        assert [r[1] for r in tail.records] == [body["callback_id"], first[1]["callback_id"]], (
            "a refused or repeated request was published"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=10) as resp:
            assert (
                json.loads(resp.read())["paths"]["/v1/callbacks"]["post"]["operationId"] == "requestCallback"
            )

        # last, as it uses up this address's failed-login allowance: 40 wrong passwords at once
        with ThreadPoolExecutor(40) as pool:
            wrong = [
                pool.submit(post, port, {"callback_number": "12125550142"}, basic_auth("bob", f"guess-{i}"))
                for i in range(40)
            ]
            latencies = []
            while not all(f.done() for f in wrong) or not latencies:
                started = time.perf_counter()
                assert request(port, "/healthz", method="GET")[0] == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
            statuses = {f.result()[0] for f in wrong}
        assert max(latencies) < 0.5, f"/healthz took {max(latencies):.2f} s under 40 wrong passwords"
        assert statuses <= {401, 429, 503} and 401 in statuses, statuses
    finally:
        web.stop()
        tail.close()


def test_web_follows_config_users_and_a_tombstone_revokes_access(stack, tmp_path):
    """Without --config the API reads ``config.users`` and the logins on ``auth.web_credentials``;
    deleting a user locks them out within a second, while the process keeps running. A user
    record of an older version that still carries a login is read without it: that user is a
    user, but the login comes from ``auth.web_credentials`` only."""
    user_id, legacy_id = f"web-{uuid.uuid4().hex[:10]}", f"old-{uuid.uuid4().hex[:10]}"
    api_key, legacy_key = f"key-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    user = User(user_id=user_id, name="follower", tariff_id="retail-usd")
    login = WebCredentials(user_id=user_id, api_key_sha256=api_key_digest(api_key))
    # as an older `config load` wrote it: the API-key digest on config.users
    legacy = {**User(user_id=legacy_id, name="old", tariff_id="retail-usd").model_dump(mode="json"),
              "api_key_sha256": api_key_digest(legacy_key)}
    producer = Producer(producer_config())

    def publish(topic: str, key: str, value: bytes | None) -> None:
        producer.produce(topic, key=key.encode(), value=value)
        assert producer.flush(30) == 0

    publish("config.users", legacy_id, json.dumps(legacy).encode())
    publish("config.users", user_id, user.model_dump_json().encode())
    publish("auth.web_credentials", user_id, login.model_dump_json().encode())
    port = free_port()
    web = CallbackProcess(["web", "--port", str(port)], tmp_path / "web.log").start()
    try:
        web.wait_for_log("web callback API listening on", timeout=60)
        headers = {"X-API-Key": api_key}
        status, body = post(port, {"callback_number": "12125550142"}, headers)
        assert status == 202, body
        assert post(port, {"callback_number": "12125550142"}, {"X-API-Key": legacy_key})[0] == 401
        assert "(written by an older version): ignored" in web.log_text()

        publish("config.users", user_id, None)  # the tombstone
        deleted = time.monotonic()
        wait_until(
            lambda: post(port, {"callback_number": "12125550142"}, headers)[0] == 401,
            20,
            "the deleted user to be refused",
            interval=0.1,
        )
        assert time.monotonic() - deleted < 1.0, "the deleted user was let in for more than a second"
        assert web.proc.poll() is None, "the web process must keep running"
    finally:
        web.stop()
