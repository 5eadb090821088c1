"""Raters in a group (docs/deployment.md): legs are keyed by payer, so the member holding a
payer's partition is its balance's only writer. Two raters share the partitions; one killed hands
its payers over (its open transaction aborted, its balances reloaded by the other), and nothing is
lost or charged twice. Two raters started with one name fence each other instead of both charging."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from callback.kafka_io import producer_config
from infra.process import wait_until
from infra.rig import CallbackProcess
from rating_stream.loadgen import (
    expected_charges,
    expected_prices,
    leg_records,
    make_legs,
    opening_balances,
    produce,
    publish_reference,
)
from rating_stream.rater import read_balances
from tests.rigs import committed_keys, rater_args, run_topics

pytestmark = pytest.mark.integration

READY = re.compile(r"ready in [\d.]+ s: partitions \[([^]]*)\]")


def held(proc: CallbackProcess) -> set[int] | None:
    """The partitions of the legs a rater said it holds after its latest assignment."""
    found = READY.findall(proc.log_text())
    return {int(p) for p in re.findall(r"\d+", found[-1])} if found else None


def _feed(topic: str, records: list[tuple[bytes, bytes]], per_s: float, errors: list) -> None:
    try:
        producer = Producer(producer_config())
        for i in range(0, len(records), 20):
            for key, value in records[i : i + 20]:
                producer.produce(topic, value, key)
            producer.poll(0)
            time.sleep(20 / per_s)
        assert producer.flush(60) == 0
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def _check_charged_once(run: str, topics: dict[str, str], legs) -> None:
    keys = committed_keys(topics["cdr"])
    assert sorted(keys) == sorted(leg.leg_id for leg in legs), "every leg rated exactly once"
    charges, count = expected_charges(expected_prices(run, legs))
    opening = opening_balances(run)
    balances = read_balances(topics["balances"])
    for key, charged in charges.items():
        assert (balances[key].balance, balances[key].sequence) == (opening[key] - charged, count[key]), key


def test_two_raters_share_the_payers_and_a_killed_one_hands_its_payers_over(stack, tmp_path):
    run = f"rg{uuid.uuid4().hex[:8]}"
    topics = run_topics(run, 6)
    publish_reference(run)
    args = rater_args(run, topics, 100)
    a = CallbackProcess([*args, "--instance", "a"], tmp_path / "a.log").start()
    b = CallbackProcess([*args, "--instance", "b"], tmp_path / "b.log").start()
    legs = list(make_legs(run, 3000, seed=3))
    records = list(leg_records(legs))
    records += records[500:560]  # redelivered by an upstream restart: dropped, not charged again
    errors: list[BaseException] = []
    try:
        def shared() -> bool:
            mine, theirs = held(a), held(b)
            return bool(mine and theirs and not mine & theirs and mine | theirs == set(range(6)))

        assert wait_until(shared, 60), f"a:\n{a.tail()}\nb:\n{b.tail()}"
        feeder = threading.Thread(target=_feed, args=(topics["legs"], records, 300.0, errors), daemon=True)
        feeder.start()
        time.sleep(3)
        a.kill()  # mid-transaction, most likely: its payers go to b after the session timeout (10 s),
        # and b reloads them once a's open transaction is aborted (its timeout: 60 s at most)
        assert wait_until(lambda: held(b) == set(range(6)), 100), b.tail()
        a.start()  # back, with its own transactional id: shares again
        assert wait_until(shared, 40), f"a:\n{a.tail()}\nb:\n{b.tail()}"
        feeder.join(120)
        assert not errors, errors
        assert wait_until(lambda: len(committed_keys(topics["cdr"])) >= len(legs), 90), b.tail()
        time.sleep(2)  # anything charged twice would show up now
    finally:
        codes = a.stop(), b.stop()
    assert codes == (0, 0), f"a:\n{a.tail()}\nb:\n{b.tail()}"
    _check_charged_once(run, topics, legs)


def test_two_raters_with_one_name_fence_each_other_instead_of_both_charging(stack, tmp_path):
    run = f"fe{uuid.uuid4().hex[:8]}"
    topics = run_topics(run)
    publish_reference(run)
    args = [*rater_args(run, topics, 50), "--instance", "same"]
    first = CallbackProcess(args, tmp_path / "first.log").start()
    legs = list(make_legs(run, 400))
    second: CallbackProcess | None = None
    try:
        produce(topics["legs"], leg_records(legs[:200]))
        assert wait_until(lambda: len(committed_keys(topics["cdr"])) >= 200, 60), first.tail()
        second = CallbackProcess(args, tmp_path / "second.log").start()
        assert wait_until(lambda: "started" in second.log_text(), 60), second.tail()
        produce(topics["legs"], leg_records(legs[200:]))
        # the first finds out at its next transaction, and must stop rather than charge
        assert wait_until(lambda: not first.alive, 90), first.tail()
        assert first.returncode() != 0 and "fenced" in first.log_text()
        assert wait_until(lambda: len(committed_keys(topics["cdr"])) >= len(legs), 90), second.tail()
    finally:
        first.stop()
        second_code = second.stop() if second is not None else None
    assert second is not None and second_code == 0, second.tail() if second else ""
    _check_charged_once(run, topics, legs)
