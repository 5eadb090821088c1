"""``callback web`` as a real process: a request lands on callback.requests in the real broker."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from producers.testing import REPO_ROOT, CliProcess, KafkaTail, free_port
from schemas.callback import CallbackInitiation

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
