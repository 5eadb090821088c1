"""Balances as a billing consumer sees them: for the demo's report and the tests."""

from __future__ import annotations

from confluent_kafka import Message

from rating_stream.replay import read_topics
from schemas.rating import BalanceUpdate


def read_balances(topic: str = "accounts.balances") -> dict[str, BalanceUpdate]:
    """The latest committed balance of every payer on ``topic`` (what a billing consumer sees)."""
    latest: dict[str, BalanceUpdate] = {}

    def on(msg: Message) -> None:
        key = msg.key().decode()
        if msg.value() is None:
            latest.pop(key, None)
        else:
            latest[key] = BalanceUpdate.model_validate_json(msg.value())

    read_topics("balances-reader", [topic], on)
    return latest

