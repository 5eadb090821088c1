"""Another team's view of the rating outputs (issue 12, done-when): a plain confluent-kafka consumer
reads ``cdr.rated``, ``accounts.ledger`` and ``accounts.balances`` (read_committed), validates every
record of this run against the published JSON Schemas in docs/contracts/ with the standard
``jsonschema`` validator, and rebuilds every payer's balance history leg by leg; the history must
equal what ClickHouse holds under ``cdr FINAL``, and end at the payer's latest balance.

Nothing of the project is used to read or validate: only the documents and a stock client."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.process import wait_until
from rating_stream.loadgen import leg_records, make_legs, opening_balances, produce, publish_reference

pytestmark = pytest.mark.integration

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts"
TOPICS = ("cdr.rated", "accounts.ledger", "accounts.balances")


def _validator(topic: str) -> jsonschema.protocols.Validator:
    schema = json.loads((CONTRACTS / f"{topic}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _read_all(bootstrap: str) -> dict[str, list[tuple[int, int, dict]]]:
    """Every committed record of TOPICS, as (partition, offset, value), read to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"another-team-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out: dict[str, list[tuple[int, int, dict]]] = defaultdict(list)
    try:
        parts = [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic in TOPICS
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        consumer.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        while pending:
            for msg in consumer.consume(num_messages=10_000, timeout=5):
                if msg.error():
                    if msg.error().code() == msg.error()._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                        continue
                    raise RuntimeError(msg.error().str())
                out[msg.topic()].append((msg.partition(), msg.offset(), json.loads(msg.value())))
    finally:
        consumer.close()
    return out


def test_another_team_rebuilds_every_payers_history_from_the_ledger(rater_and_sink, stack):
    run = f"lc{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    legs = list(make_legs(run, 1200))
    produce("callback.legs", leg_records(legs))
    ch = stack.clickhouse_client()
    stored = f"SELECT count() FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
    assert wait_until(lambda: ch.execute(stored)[0][0] == len(legs), 120, interval=0.5)
    price_of = {
        leg_id: (f"{kind}:{payer}", price)
        for leg_id, kind, payer, price in ch.execute(
            "SELECT leg_id, toString(payer_kind), payer_id, price FROM callback.cdr FINAL "
            f"WHERE callback_id LIKE '{run}-%'"
        )
    }

    records = _read_all(stack.bootstrap_servers)
    validators = {topic: _validator(topic) for topic in TOPICS}
    opening = opening_balances(run)  # this run's payers, by balance key

    def mine(topic: str, record: dict) -> bool:
        if topic == "cdr.rated":
            return record["callback_id"].startswith(f"{run}-")
        return f"{record['payer_kind']}:{record['payer_id']}" in opening

    checked: dict[str, int] = defaultdict(int)
    for topic, rows in records.items():
        for _p, _o, record in rows:
            if mine(topic, record):
                validators[topic].validate(record)  # raises with the field that is wrong
                checked[topic] += 1
            checked[topic] += 1
    assert checked["cdr.rated"] >= len(legs) and checked["accounts.ledger"] and checked["accounts.balances"]

    # the ledger, folded per payer in its order on the partition, from the configured opening balance
    history: dict[str, list[dict]] = defaultdict(list)
    for _p, _o, entry in sorted(records["accounts.ledger"], key=lambda r: (r[0], r[1])):
        payer = f"{entry['payer_kind']}:{entry['payer_id']}"
        if payer in opening:
            history[payer].append(entry)
    charged = {leg_id: (payer, price) for leg_id, (payer, price) in price_of.items() if price > 0}
    assert {e["leg_id"] for entries in history.values() for e in entries} == set(charged)
    latest = {}
    for _p, _o, update in sorted(records["accounts.balances"], key=lambda r: (r[0], r[1])):
        latest[f"{update['payer_kind']}:{update['payer_id']}"] = update
    for payer, entries in history.items():
        balance = opening[payer]
        for n, entry in enumerate(entries, start=1):
            leg_payer, price = charged[entry["leg_id"]]
            assert leg_payer == payer and Decimal(entry["amount"]) == -price, entry
            balance += Decimal(entry["amount"])
            assert Decimal(entry["balance"]) == balance and entry["sequence"] == n, entry
        assert Decimal(latest[payer]["balance"]) == balance and latest[payer]["sequence"] == len(entries)
        assert balance == opening[payer] - sum(p for _l, (who, p) in charged.items() if who == payer)
