"""A broker pause does not stop the rating stream (issue item 3), on the real stack.

The Kafka broker is frozen with SIGSTOP for 20 s (longer than the sink's 10 s session timeout, so
the group coordinator evicts the sink and its next commit fails with UNKNOWN_MEMBER_ID), while
legs flow through the real ``callback rating`` and ``callback cdr-sink`` processes, then thawed
with SIGCONT. Both processes must still run afterwards, every leg must be charged exactly once
and every CDR stored in ClickHouse (``FINAL``: a re-read batch is inserted again and collapsed).
"""

from __future__ import annotations

import os
import signal
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
    make_legs,
    opening_balances,
    publish_reference,
)
from rating_stream.rater import read_balances
from tests.rigs import committed_keys, rater_args, run_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEGS = 3000
RATE_PER_S = 100
PAUSE_S = 20


def _feed(topic: str, legs, errors: list[BaseException]) -> None:
    try:
        producer = Producer(producer_config())
        for i in range(0, len(legs), 20):
            for leg in legs[i : i + 20]:
                producer.produce(topic, leg.model_dump_json().encode(), leg.payer.key.encode())
            producer.poll(0)
            time.sleep(20 / RATE_PER_S)
        assert producer.flush(120) == 0
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_rater_and_sink_ride_out_a_20_s_kafka_pause(stack, tmp_path):
    from infra import stack as local_stack

    run = f"rp{uuid.uuid4().hex[:8]}"
    topics = run_topics(run)
    publish_reference(run)
    legs = list(make_legs(run, LEGS, seed=17))
    rater = CallbackProcess(rater_args(run, topics, 200), tmp_path / "rater.log").start()
    sink = CallbackProcess(
        [
            "cdr-sink",
            "--topic",
            topics["cdr"],
            "--group-id",
            f"sink-{run}",
            "--batch-max",
            "300",
            "--flush-interval-s",
            "0.3",
        ],
        tmp_path / "sink.log",
    ).start()
    ch = stack.clickhouse_client()
    stored = f"SELECT count() FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
    errors: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(topics["legs"], legs, errors), daemon=True)
    kafka_pid = local_stack.layout().kafka_process().running_pid()
    assert kafka_pid is not None
    try:
        assert wait_until(lambda: "ready" in rater.log_text(), 60), rater.tail()
        feeder.start()
        assert wait_until(lambda: ch.execute(stored)[0][0] > 200, 60, interval=0.5), (
            rater.tail(),
            sink.tail(),
        )
        os.kill(kafka_pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
        feeder.join(180)
        assert not errors, errors
        done = lambda: ch.execute(stored)[0][0] >= LEGS or not (rater.alive and sink.alive)  # noqa: E731
        assert wait_until(done, 180, interval=1), (
            f"{ch.execute(stored)[0][0]} of {LEGS} stored\nrater:\n{rater.tail()}\nsink:\n{sink.tail()}"
        )
        assert rater.alive, f"the rater exited:\n{rater.tail()}"
        assert sink.alive, f"the sink exited:\n{sink.tail()}"
    finally:
        os.kill(kafka_pid, signal.SIGCONT)  # never leave the broker frozen
        codes = rater.stop(), sink.stop()
    assert codes == (0, 0), f"unclean exit {codes}\nrater:\n{rater.tail()}\nsink:\n{sink.tail()}"

    # every leg charged exactly once, every CDR stored (once under FINAL)
    assert sorted(committed_keys(topics["cdr"])) == sorted(leg.leg_id for leg in legs)
    assert ch.execute(stored)[0][0] == LEGS
    expected = expected_prices(run, legs)
    rows = ch.execute(f"SELECT leg_id, price FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'")
    assert dict(rows) == {leg_id: price for leg_id, (_k, price) in expected.items()}
    charges, count = expected_charges(expected)
    opening = opening_balances(run)
    balances = read_balances(topics["balances"])
    for key, charged in charges.items():
        assert (balances[key].balance, balances[key].sequence) == (opening[key] - charged, count[key]), key
    raw = ch.execute(f"SELECT count() FROM callback.cdr WHERE callback_id LIKE '{run}-%'")[0][0]
    ch.disconnect()
    print(f"{LEGS} legs, {raw} rows inserted ({raw - LEGS} re-inserted after the pause, collapsed by FINAL)")
    sink_log = sink.log_text()
    print("sink noticed:", [line for line in sink_log.splitlines() if "commit" in line.lower()][:5])
