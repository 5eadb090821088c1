"""``callback rerate`` after a tariff change: new CDR versions through the normal path, the old
ones kept as history, balances corrected once, and the rater carrying on from the corrected state."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, TopicPartition

from callback.kafka_io import consumer_config
from callback.topic_reader import partitions_of, watermarks
from infra.process import wait_until
from infra.rig import CallbackProcess
from rating_stream.cdr import CDR_COLUMNS, cdr_row, rated_cdr
from rating_stream.engine import CompiledTariff, quote
from rating_stream.loadgen import leg_records, produce, publish_reference, tariffs
from rating_stream.rater import read_balances
from schemas.callback import Disposition, FinishedLeg, LegType, Payer, PayerKind, leg_id_for

pytestmark = pytest.mark.integration


def _rerate(*args: str) -> subprocess.CompletedProcess[str]:
    """``callback rerate`` as an operator runs it, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "callback.cli", "rerate", *args], capture_output=True, text=True, timeout=120
    )


D = Decimal


def _applied_every_rerate(group: str = "callback-rater") -> bool:
    """Whether the raters' group has committed every record on cdr.rerates."""
    consumer = Consumer(consumer_config(group))
    try:
        parts = [TopicPartition("cdr.rerates", p) for p in partitions_of(consumer, "cdr.rerates")]
        committed = consumer.committed(parts, timeout=10)
        ends = [watermarks(consumer, tp.topic, tp.partition)[1] for tp in committed]
        return all(end == 0 or tp.offset >= end for tp, end in zip(committed, ends, strict=True))
    finally:
        consumer.close()


def spain_minute(run: str, n: int, day: date) -> FinishedLeg:
    t = datetime(day.year, day.month, day.day, 12, n, tzinfo=UTC)
    return FinishedLeg(
        source="test",
        leg_id=leg_id_for(f"{run}-{n}", LegType.B, 0),
        callback_id=f"{run}-{n}",
        leg=LegType.B,
        dst="34911234567",
        started_at=t,
        answered_at=t + timedelta(seconds=2),
        ended_at=t + timedelta(seconds=62),
        disposition=Disposition.ANSWERED,
        payer=Payer(kind=PayerKind.USER, id=f"{run}-u0"),
    )


def test_rerate_writes_new_versions_and_corrects_balances_once(stack, tmp_path):
    run = f"rt{uuid.uuid4().hex[:8]}"
    day = date(1990, 1, 1) + timedelta(days=random.randrange(7000))
    key = f"user:{run}-u0"
    publish_reference(run)
    rater = CallbackProcess(["rating", "--batch-max", "100"], tmp_path / "rater.log").start()
    sink = CallbackProcess(["cdr-sink", "--flush-interval-s", "0.3"], tmp_path / "sink.log").start()
    ch = stack.clickhouse_client()
    try:
        produce("callback.legs", leg_records(spain_minute(run, n, day) for n in range(3)))
        prices = f"SELECT price FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%' ORDER BY leg_id"
        assert wait_until(lambda: len(ch.execute(prices)) == 3, 60), rater.tail()
        assert [p for (p,) in ch.execute(prices)] == [D("0.08")] * 3
        before = read_balances()[key]
        assert before.balance == D("1000.00") - D("0.24")

        retail = tariffs(run)[0]  # Spain goes from 0.08 to 0.10 a minute
        rates = [
            r.model_copy(update={"rate_per_minute": D("0.10")}) if r.prefix == "34" else r
            for r in retail.rates
        ]
        changed = retail.model_copy(update={"rates": rates})
        produce("config.tariffs", [(changed.tariff_id.encode(), changed.model_dump_json().encode())])

        window = ["--since", day.isoformat(), "--until", (day + timedelta(days=1)).isoformat()]
        dry = _rerate(*window, "--dry-run")
        assert dry.returncode == 0 and "would re-price 3" in dry.stdout, dry.stdout + dry.stderr
        assert sink.stop() == 0  # ClickHouse keeps the old versions while rerate runs twice
        done = _rerate(*window)
        assert done.returncode == 0 and "re-priced 3" in done.stdout, done.stdout + done.stderr
        assert f"{key}" in done.stdout and "charge 0.06" in done.stdout
        # the running rater applies them, without being stopped or fenced
        corrected_to = before.balance - D("0.06")
        assert wait_until(lambda: read_balances()[key].balance == corrected_to, 60), rater.tail()
        twice = _rerate(*window)  # the sink has not stored version 2: the same versions again
        assert twice.returncode == 0 and "re-priced 3" in twice.stdout, twice.stdout + twice.stderr
        assert wait_until(lambda: _applied_every_rerate(), 60), rater.tail()
        dropped = sum(int(n) for n in re.findall(r"dropped (\d+) redelivered", rater.log_text()))
        assert dropped == 3 and read_balances()[key].balance == before.balance - D("0.06")

        sink.start()
        assert wait_until(lambda: [p for (p,) in ch.execute(prices)] == [D("0.10")] * 3, 60), sink.tail()
        names = f"SELECT DISTINCT destination FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
        assert ch.execute(names) == [("Spain",)]  # the re-rated versions keep the destination name
        history = ch.execute(
            f"SELECT leg_id, version, price FROM callback.cdr_versions FINAL "
            f"WHERE leg_id LIKE '{run}-%' ORDER BY leg_id, version"
        )
        assert [(v, p) for _leg, v, p in history] == [(1, D("0.08")), (2, D("0.10"))] * 3
        corrected = read_balances()[key]
        assert corrected.balance == before.balance - D("0.06") and corrected.sequence == before.sequence

        again = _rerate(*window)
        assert again.returncode == 0 and "re-priced 0" in again.stdout  # idempotent
        assert read_balances()[key].balance == corrected.balance

        # the same rater goes on charging, from the corrected balance
        produce("callback.legs", leg_records([spain_minute(run, 3, day)]))
        assert wait_until(lambda: len(ch.execute(prices)) == 4, 60), rater.tail()
        final = read_balances()[key]
        assert final.balance == corrected.balance - D("0.10") and final.sequence == before.sequence + 1
        assert rater.alive and "fenced" not in rater.log_text()
    finally:
        codes = rater.stop(), sink.stop()
        ch.disconnect()
    assert codes == (0, 0), f"rater:\n{rater.tail()}\nsink:\n{sink.tail()}"


def test_rerate_gives_legs_stored_before_destinations_their_name_at_the_same_price(stack, tmp_path):
    """A leg the sink stored before ``cdr.destination`` existed has '' there (the column's default
    after migration 0005); re-rating its dates writes a new version with the name, the price and
    the balance untouched (docs/analytics.md, "Revenue by destination")."""
    run = f"rd{uuid.uuid4().hex[:8]}"
    day = date(1990, 1, 1) + timedelta(days=random.randrange(7000))
    publish_reference(run)
    leg = spain_minute(run, 0, day)
    q = quote(CompiledTariff.build(tariffs(run)[0]), leg.dst, leg.billsec_ms, True)
    old = rated_cdr(leg, q, version=1, rated_at=leg.ended_at, source="old")
    row = dict(zip(CDR_COLUMNS, cdr_row(old.model_dump_json().encode()), strict=True))
    row["destination"] = ""
    ch = stack.clickhouse_client()
    ch.execute(f"INSERT INTO callback.cdr ({', '.join(CDR_COLUMNS)}) VALUES", [list(row.values())])
    stored = f"SELECT version, destination, price FROM callback.cdr FINAL WHERE leg_id = '{leg.leg_id}'"
    assert ch.execute(stored) == [(1, "", D("0.08"))]
    balances = read_balances()

    sink = CallbackProcess(["cdr-sink", "--flush-interval-s", "0.3"], tmp_path / "sink.log").start()
    rater = CallbackProcess(["rating", "--batch-max", "100"], tmp_path / "rater.log").start()
    try:
        window = ["--since", day.isoformat(), "--until", (day + timedelta(days=1)).isoformat()]
        done = _rerate(*window)
        assert done.returncode == 0 and "re-priced 1" in done.stdout, done.stdout + done.stderr
        assert "charge" not in done.stdout and "refund" not in done.stdout
        assert wait_until(lambda: ch.execute(stored) == [(2, "Spain", D("0.08"))], 60), sink.tail()
        assert read_balances().get(f"user:{run}-u0") == balances.get(f"user:{run}-u0")
    finally:
        codes = sink.stop(), rater.stop()
        ch.disconnect()
    assert codes == (0, 0), sink.tail() + rater.tail()
