"""``callback web`` as a real process: a request lands on callback.requests in the real broker."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer

from callback.kafka_io import producer_config
from producers.auth import api_key_digest
from producers.testing import REPO_ROOT, CliProcess, KafkaTail, free_port, wait_until
from schemas.callback import CallbackInitiation
from schemas.reference import User

pytestmark = pytest.mark.integration


def post(port: int, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/callbacks",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_web_callback_reaches_kafka_and_refusals_do_not(stack, tmp_path):
    tail = KafkaTail(["callback.requests"])
    port = free_port()
    web = CliProcess(
        ["web", "--port", str(port), "--config", str(REPO_ROOT / "examples" / "carrier.yaml")],
        tmp_path / "web.log",
    )
    try:
        web.wait_for_log("web callback API listening on", timeout=30)
        auth = {"Authorization": "Basic " + base64.b64encode(b"bob:bob-web-secret").decode()}
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

        assert post(port, {"callback_number": "12125550142"}, {"X-API-Key": "nope"})[0] == 401
        assert post(port, {"callback_number": "call me"}, auth)[0] == 422
        tail.poll(1.0)
        assert [r[1] for r in tail.records] == [body["callback_id"]], "a refused request was published"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=10) as resp:
            assert (
                json.loads(resp.read())["paths"]["/v1/callbacks"]["post"]["operationId"] == "requestCallback"
            )
    finally:
        web.stop()
        tail.close()


def test_web_follows_config_users_and_a_tombstone_revokes_access(stack, tmp_path):
    """Without --config the API reads ``config.users``; deleting a user there locks them out at
    once, while the process keeps running."""
    user_id = f"web-{uuid.uuid4().hex[:10]}"
    api_key = f"key-{uuid.uuid4().hex}"
    digest = api_key_digest(api_key)
    user = User(user_id=user_id, name="follower", tariff_id="retail-usd", api_key_sha256=digest)
    producer = Producer(producer_config())

    def publish(value: bytes | None) -> None:
        producer.produce("config.users", key=user_id.encode(), value=value)
        assert producer.flush(30) == 0

    publish(user.model_dump_json().encode())
    port = free_port()
    web = CliProcess(["web", "--port", str(port)], tmp_path / "web.log")
    try:
        web.wait_for_log("web callback API listening on", timeout=60)
        headers = {"X-API-Key": api_key}
        status, body = post(port, {"callback_number": "12125550142"}, headers)
        assert status == 202, body

        publish(None)  # the tombstone
        wait_until(
            lambda: post(port, {"callback_number": "12125550142"}, headers)[0] == 401,
            20,
            "the deleted user to be refused",
            interval=0.2,
        )
        assert web.proc.poll() is None, "the web process must keep running"
    finally:
        web.stop()
