"""`callback config load` on the real broker: a valid carrier is published, a broken one is not."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.reference import Tariff
from schemas.topics import CONFIG_TARIFFS, CONFIG_TOPICS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "carrier.yaml"


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
    assert "published 23 records" in result.stdout
    tariffs = {
        k: Tariff.model_validate_json(v)
        for k, v in _read_all(stack.bootstrap_servers, CONFIG_TARIFFS.name).items()
    }
    retail = tariffs["retail-usd"]
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
