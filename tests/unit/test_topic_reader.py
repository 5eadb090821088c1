"""``read_latest`` without a broker: the current value per key of a compacted topic, from the records
``read_topics`` delivers (tombstones remove a key, invalid records are skipped and reported)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from callback import topic_reader
from callback.topic_reader import read_latest
from schemas.callback import PayerKind
from schemas.rating import BalanceUpdate


class Msg:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def _balance(payer_id: str, sequence: int) -> bytes:
    return (
        BalanceUpdate(
            source="test",
            payer_kind=PayerKind.USER,
            payer_id=payer_id,
            balance=Decimal("10") - sequence,
            currency="USD",
            delta=Decimal("-1"),
            leg_id=f"leg-{sequence}",
            sequence=sequence,
            time=datetime(2026, 11, 3, 12, 0, tzinfo=UTC),
        )
        .model_dump_json()
        .encode()
    )


def test_the_last_record_per_key_wins_tombstones_remove_and_invalid_records_are_skipped(
    monkeypatch, caplog
):
    records = [
        Msg(b"user:ann", _balance("ann", 1)),
        Msg(b"user:bo", _balance("bo", 1)),
        Msg(b"user:ann", _balance("ann", 2)),
        Msg(b"user:bo", None),  # bo's account was closed
        Msg(b"user:ann", b'{"not": "a balance"}'),  # some tool's bad record: ann keeps sequence 2
        Msg(b"user:cy", b"garbage"),  # a key with only a bad record is absent
    ]
    asked: list[tuple[str, list[str]]] = []

    def fake_read_topics(purpose, topics, on_record):
        asked.append((purpose, list(topics)))
        for msg in records:
            on_record(msg)
        return len(records)

    monkeypatch.setattr(topic_reader, "read_topics", fake_read_topics)
    with caplog.at_level(logging.ERROR, logger="callback.topic_reader"):
        latest = read_latest("accounts.balances", BalanceUpdate)
    assert asked == [("latest-accounts.balances", ["accounts.balances"])]
    assert set(latest) == {"user:ann"} and latest["user:ann"].sequence == 2
    assert caplog.text.count("ignoring invalid accounts.balances record") == 2
