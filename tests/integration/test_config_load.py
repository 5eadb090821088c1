"""`callback config load` on the real broker: a valid carrier is published, a broken one is not."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from infra.pbx_sim.scenario import parse_scenario
from infra.rig import CallbackProcess, SimulatorThread, ami_secret_env, free_port
from schemas.credentials import WebCredentials
from schemas.reference import LEGACY_CREDENTIAL_FIELDS, Did, Tariff
from schemas.topics import (
    AUTH_WEB_CREDENTIALS,
    CONFIG_DIDS,
    CONFIG_SERVERS,
    CONFIG_TARIFFS,
    CONFIG_TOPICS,
    CONFIG_USERS,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "carrier.yaml"
#: hex SHA-256 of alice's API key in the sample, demo-key-alice-7f3b2c
ALICE_KEY_DIGEST = "cb7fa34e426302046d8d19d00987036a40d735016ec03c5609bcfc10db32f60d"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callback.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _end_offsets(bootstrap: str) -> dict[str, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
        }
    )
    try:
        return {
            t.name: consumer.get_watermark_offsets(TopicPartition(t.name, 0), timeout=10)[1]
            for t in CONFIG_TOPICS
        }
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str) -> dict[str, bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    latest: dict[str, bytes] = {}
    try:
        while consumer.position([TopicPartition(topic, 0)])[0].offset < end - 1 or not latest:
            msg = consumer.poll(5)
            if msg is None:
                break
            if msg.error() is None and msg.value() is not None:
                latest[msg.key().decode()] = msg.value()
    finally:
        consumer.close()
    return latest


def test_sample_carrier_is_published_to_config_topics(stack):
    result = _cli("config", "load", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "published 27 records" in result.stdout
    # only this file's record: the topic may also hold unusable ones other tests publish on purpose
    retail = Tariff.model_validate_json(_read_all(stack.bootstrap_servers, CONFIG_TARIFFS.name)["retail-usd"])
    assert {r.prefix: str(r.rate_per_minute) for r in retail.rates}["234"] == "0.20"


def test_broken_copy_is_refused_and_nothing_is_published(stack, tmp_path):
    broken = tmp_path / "carrier.yaml"
    text = SAMPLE.read_text().replace("dialplan_id: cb-ani\n    pbx_id", "dialplan_id: nope\n    pbx_id")
    broken.write_text(text)
    before = _end_offsets(stack.bootstrap_servers)
    result = _cli("config", "load", str(broken))
    assert result.returncode == 1
    assert "nothing published" in result.stderr
    assert "dids.1.dialplan_id" in result.stderr and "Traceback" not in result.stderr
    bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if "dialplan_id: nope" in line)
    assert f"carrier.yaml:{bad_line}:" in result.stderr
    assert _end_offsets(stack.bootstrap_servers) == before


def test_web_logins_stay_off_config_users_and_the_web_api_still_lets_the_users_in(stack, tmp_path):
    """``config.users`` is read by every service: after ``config load`` of a file whose users have
    web logins, none of its records carries a login; ``auth.web_credentials`` does, and the web
    API, reading the topics (no --config), lets those users in by password and by API key."""
    result = _cli("config", "load", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    users = _read_all(stack.bootstrap_servers, CONFIG_USERS.name)
    for user_id in ("cb-owner", "alice", "bob", "chidi"):
        record = json.loads(users[user_id])
        assert record["user_id"] == user_id and not set(record) & set(LEGACY_CREDENTIAL_FIELDS), record
        assert b"pbkdf2" not in users[user_id] and ALICE_KEY_DIGEST.encode() not in users[user_id]
    logins = _read_all(stack.bootstrap_servers, AUTH_WEB_CREDENTIALS.name)
    alice = WebCredentials.model_validate_json(logins["alice"])
    assert (alice.web_username, alice.api_key_sha256) == ("alice", ALICE_KEY_DIGEST)
    assert WebCredentials.model_validate_json(logins["chidi"]).web_username is None

    port = free_port()
    web = CallbackProcess(["web", "--port", str(port)], tmp_path / "web.log").start()
    try:
        web.wait_for_log("web callback API listening on", timeout=60)
        basic = "Basic " + base64.b64encode(b"alice:alice-web-secret").decode()
        for headers in ({"Authorization": basic}, {"X-API-Key": "demo-key-alice-7f3b2c"}):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/callbacks",
                data=json.dumps({"callback_number": "12125550142"}).encode(),
                headers={"Content-Type": "application/json", **headers},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=20) as resp:
                assert resp.status == 202 and json.loads(resp.read())["callback_id"]
    finally:
        web.stop()


# --- AMI secrets stay off the topics; the config topics are read in moments ----------------------


def _carrier_with_pbx(
    tmp_path: Path, server: str, host: str, port: int, did: str, secret: str | None
) -> Path:
    """The sample plus one PBX of this test (and an access number pinned to it)."""
    data = yaml.safe_load(SAMPLE.read_text())
    entry = {"server_id": server, "ami_host": host, "ami_port": port, "ami_username": "callback"}
    if secret is not None:
        entry["ami_secret"] = secret  # how files were written before secrets moved to the settings
    data["servers"].append(entry)
    data["dids"].append({"number": did, "dialplan_id": "cb-ani", "pbx_id": server})
    path = tmp_path / "carrier.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_an_ami_secret_in_the_file_is_not_published(stack, tmp_path):
    server, secret = f"pbx-{uuid.uuid4().hex[:8]}", f"s3cr3t-{uuid.uuid4().hex[:8]}"
    path = _carrier_with_pbx(tmp_path, server, "127.0.0.1", 5038, "2349" + str(uuid.uuid4().int)[:8], secret)
    result = _cli("config", "load", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "ami_secret" in line]
    assert len(warnings) == 1 and server in warnings[0] and "not published" in warnings[0], result.stderr
    records = _read_all(stack.bootstrap_servers, CONFIG_SERVERS.name)
    assert server in records
    assert b"ami_secret" not in records[server]  # (records of older runs may still carry one)
    assert all(secret.encode() not in value for value in records.values())
    assert json.loads(records[server])["ami_username"] == "callback"


def test_producer_reading_the_config_topics_is_ready_within_seconds(stack, tmp_path):
    """config load publishes in one transaction, so each config topic ends with a commit marker that
    no record reaches; the producer used to wait 30 s per topic for it. Its endpoint comes from
    config.servers, its access numbers from config.dids, its secret from its settings."""
    server, did = f"pbx-{uuid.uuid4().hex[:8]}", "2349" + str(uuid.uuid4().int)[:8]
    sim = SimulatorThread(parse_scenario({"subscribers": {}}))
    try:
        path = _carrier_with_pbx(tmp_path, server, sim.host, sim.port, did, None)
        assert _cli("config", "load", str(path)).returncode == 0
        started = time.monotonic()
        producer = CallbackProcess(
            ["producer", "--pbx", server], tmp_path / "producer.log", env=ami_secret_env(server)
        ).start()
        try:
            producer.wait_for_log("access number(s)", timeout=30)
            ready = time.monotonic() - started
            producer.wait_for_log("logged in", timeout=10)
            (line,) = [
                x for x in producer.log_text().splitlines() if f"PBX {server}: " in x and "access" in x
            ]
            assert line.endswith(did), line  # the one access number pinned to this PBX
            # python start-up and imports included (about a second); it was over 60 s (2 x 30 s)
            assert ready < 5.0, f"ready after {ready:.1f} s:\n{producer.log_text()}"
        finally:
            code = producer.stop()
    finally:
        sim.close()
    assert code == 0, producer.log_text()[-2000:]


def test_a_running_producer_takes_an_added_and_a_deleted_access_number_without_a_restart(stack, tmp_path):
    """The producer follows config.dids (the shared fold, ``callback.reference_feed``): a DID
    published for its PBX becomes an access number, and its tombstone removes it again."""
    from confluent_kafka import Producer

    from callback.kafka_io import producer_config

    server, did = f"pbx-{uuid.uuid4().hex[:8]}", "2349" + str(uuid.uuid4().int)[:8]
    added = "2349" + str(uuid.uuid4().int)[:8]
    sim = SimulatorThread(parse_scenario({"subscribers": {}}))
    kafka = Producer(producer_config())
    try:
        path = _carrier_with_pbx(tmp_path, server, sim.host, sim.port, did, None)
        assert _cli("config", "load", str(path)).returncode == 0
        producer = CallbackProcess(
            ["producer", "--pbx", server], tmp_path / "producer.log", env=ami_secret_env(server)
        ).start()
        try:
            producer.wait_for_log("access number(s)", timeout=30)
            record = Did(number=added, dialplan_id="cb-ani", pbx_id=server)
            kafka.produce(CONFIG_DIDS.name, key=added.encode(), value=record.model_dump_json().encode())
            kafka.flush(10)
            both = ", ".join(sorted((did, added)))
            producer.wait_for_log(f"access numbers of PBX {server} changed to 2: {both}", timeout=15)
            kafka.produce(CONFIG_DIDS.name, key=added.encode(), value=None)  # deleted
            kafka.flush(10)
            producer.wait_for_log(f"access numbers of PBX {server} changed to 1: {did}", timeout=15)
        finally:
            code = producer.stop()
    finally:
        sim.close()
    assert code == 0, producer.log_text()[-2000:]
