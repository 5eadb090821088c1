"""Crash test: SIGKILL the rater and the sink again and again while thousands of legs flow.

Afterwards the CDRs in ClickHouse (read with FINAL) must total exactly what the legs cost, to the
cent, and every payer's balance on ``accounts.balances`` must equal its opening balance minus
exactly the sum of its charges, with exactly one charge per charged leg: no leg lost, none
charged twice, whatever moment the kills hit (mid-transaction, mid-insert, during start-up).
"""

from __future__ import annotations

import random
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEGS = 4000
DUPLICATES = 150  # redeliveries of legs already sent, as a crashed upstream processor would cause
RATE_PER_S = 150


def _feed(legs, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        producer = Producer(producer_config())
        for i in range(0, len(legs), 30):
            if stop.is_set():
                return
            for leg in legs[i : i + 30]:
                producer.produce("callback.legs", leg.model_dump_json().encode(), leg.payer.key.encode())
            producer.poll(0)
            time.sleep(30 / RATE_PER_S)
        assert producer.flush(60) == 0
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_sigkill_rater_and_sink_mid_run_charges_every_leg_exactly_once(stack, tmp_path):
    run = f"rk{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    legs = list(make_legs(run, LEGS, seed=11))
    rng = random.Random(5)
    stream = list(legs)
    for _ in range(DUPLICATES):  # a redelivered leg: same leg id, new event id, a little later
        i = rng.randrange(len(legs) - 50)
        stream.insert(
            rng.randrange(i + 1, min(i + 400, len(stream))),
            legs[i].model_copy(update={"event_id": uuid.uuid4().hex}),
        )

    rater = CallbackProcess(["rating", "--batch-max", "150"], tmp_path / "rater.log").start()
    sink = CallbackProcess(
        ["cdr-sink", "--batch-max", "400", "--flush-interval-s", "0.3"], tmp_path / "sink.log"
    ).start()
    stop, errors = threading.Event(), []
    feeder = threading.Thread(target=_feed, args=(stream, stop, errors), daemon=True)
    feeder.start()
    ch = stack.clickhouse_client()
    stored_sql = f"SELECT count() FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
    try:
        kill_until = time.monotonic() + 75
        while time.monotonic() < kill_until:
            time.sleep(rng.uniform(0.6, 1.6))
            for proc in (rater, sink):
                code = proc.returncode()
                assert code is None, f"{proc.args[0]} exited by itself with {code}:\n{proc.tail()}"
            victims = rng.choice(((rater,), (rater,), (sink,), (sink,), (rater, sink)))
            for proc in victims:
                proc.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            for proc in victims:
                proc.start()
            if not feeder.is_alive() and rater.kills >= 12 and sink.kills >= 12:
                break
        feeder.join(120)
        assert not errors, errors
        assert wait_until(lambda: ch.execute(stored_sql)[0][0] >= LEGS, 120, interval=0.5), (
            f"{ch.execute(stored_sql)[0][0]} of {LEGS} stored\nrater:\n{rater.tail()}\nsink:\n{sink.tail()}"
        )
    finally:
        stop.set()
        codes = rater.stop(), sink.stop()
    assert codes == (0, 0), f"unclean exit {codes}"
    assert rater.kills >= 10 and sink.kills >= 10, (rater.kills, sink.kills)

    expected = expected_prices(run, legs)
    assert ch.execute(stored_sql)[0][0] == LEGS
    rows = ch.execute(f"SELECT leg_id, price FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'")
    assert dict(rows) == {leg_id: price for leg_id, (_k, price) in expected.items()}
    total = ch.execute(f"SELECT sum(price) FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'")[0][0]
    assert total == sum(p for _k, p in expected.values())

    charges, count = expected_charges(expected)
    opening = opening_balances(run)
    balances = read_balances()
    for key, charged in charges.items():
        assert (balances[key].balance, balances[key].sequence) == (opening[key] - charged, count[key]), key
    raw = ch.execute(f"SELECT count() FROM callback.cdr WHERE callback_id LIKE '{run}-%'")[0][0]
    print(
        f"kills: rater {rater.kills}, sink {sink.kills}; rows inserted {raw} for {LEGS} legs "
        f"({raw - LEGS} replayed inserts collapsed by FINAL); total {total}"
    )
