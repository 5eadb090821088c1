"""Every query of docs/analytics.md runs on the real schema and answers a known scenario right.

The scenario is placed on a day of its own (random, decades ago), and the documented date range is
replaced by that day, so the answers depend only on this test's legs.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from infra.process import wait_until
from infra.rig import CallbackProcess
from rating_stream.loadgen import cards, leg_records, produce, publish_reference
from schemas.callback import Disposition, FinishedLeg, LegType, Payer, PayerKind, SessionState, leg_id_for

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
QUERY = re.compile(r"<!-- query: (\w+) -->\s*```sql\n(.*?)```", re.S)
DID = "2349012345678"


def doc_queries(day: date) -> dict[str, str]:
    found = {
        name: sql.replace("2024-05-01", day.isoformat()).replace("2024-05-31", day.isoformat())
        for name, sql in QUERY.findall(DOC.read_text())
    }
    assert len(found) >= 7, f"expected the documented queries in {DOC}, found {sorted(found)}"
    return found


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory) -> Iterator[None]:
    logs = tmp_path_factory.mktemp("rating-analytics")
    rater = CallbackProcess(["rating", "--batch-max", "500"], logs / "rater.log").start()
    sink = CallbackProcess(["cdr-sink", "--flush-interval-s", "0.3"], logs / "sink.log").start()
    yield
    assert (rater.stop(), sink.stop()) == (0, 0), f"rater:\n{rater.tail()}\nsink:\n{sink.tail()}"


class Scenario:
    """Builds legs of callbacks on one day, all through one DID."""

    def __init__(self, run: str, day: date) -> None:
        self.run, self.legs = run, []
        self.t = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)
        self.owner = Payer(kind=PayerKind.CALLBACK_USER, id=f"{run}-owner")
        self.user = Payer(kind=PayerKind.USER, id=f"{run}-u0")
        self.card = Payer(kind=PayerKind.CARD, id=cards(run, 10)[0].number)

    def leg(
        self,
        cb: int,
        leg: LegType,
        dst: str,
        payer: Payer,
        final: SessionState,
        talk_s: int | None,
        disposition: Disposition = Disposition.ANSWERED,
        attempt: int = 0,
    ) -> None:
        self.t += timedelta(minutes=1)
        answered = self.t + timedelta(seconds=5) if talk_s is not None else None
        if talk_s is None and disposition is Disposition.ANSWERED:
            disposition = Disposition.NO_ANSWER
        self.legs.append(
            FinishedLeg(
                source="test",
                leg_id=leg_id_for(f"{self.run}-{cb}", leg, attempt),
                callback_id=f"{self.run}-{cb}",
                leg=leg,
                attempt=attempt,
                did=DID,
                dst=dst,
                started_at=self.t,
                answered_at=answered,
                ended_at=(answered or self.t) + timedelta(seconds=talk_s or 3),
                disposition=disposition,
                payer=payer,
                final_state=final,
            )
        )


def build(run: str, day: date) -> Scenario:
    s = Scenario(run, day)
    done, auth_failed, rejected, failed_b = (
        SessionState.COMPLETED,
        SessionState.AUTH_FAILED,
        SessionState.REJECTED,
        SessionState.FAILED_B,
    )
    # 1: a full callback, the seed's example: 1 min to Nigeria (0.20) + 1 min to Spain (0.08)
    s.leg(1, LegType.INITIATION, "2341234567", s.owner, done, None)
    s.leg(1, LegType.A, "2341234567", s.user, done, 60)
    s.leg(1, LegType.B, "34911234567", s.user, done, 60)
    # 2: no answer, retried, answered but never authenticated: the system owner pays 30 s (60/60)
    s.leg(2, LegType.INITIATION, "2341234567", s.owner, auth_failed, None)
    s.leg(2, LegType.A, "2341234567", s.owner, auth_failed, None, attempt=0)
    s.leg(2, LegType.A, "2341234567", s.owner, auth_failed, 30, attempt=1)
    # 3-5: initiations refused (origins without a rate in the Callback Tariff)
    s.leg(3, LegType.INITIATION, "8821234", s.owner, rejected, None)
    s.leg(4, LegType.INITIATION, "8821234", s.owner, rejected, None)
    s.leg(5, LegType.INITIATION, "99912345", s.owner, rejected, None)
    # 6: a card holder, 2 min to the US (0.015/min, 6 s blocks), destination busy
    s.leg(6, LegType.INITIATION, "12125550142", s.owner, failed_b, None)
    s.leg(6, LegType.A, "12125550142", s.card, failed_b, 120)
    s.leg(6, LegType.B, "442071234567", s.card, failed_b, None, Disposition.BUSY)
    return s


def test_documented_queries_answer_the_scenario(pipeline, stack):
    run = f"ra{uuid.uuid4().hex[:8]}"
    day = date(1990, 1, 1) + timedelta(days=random.randrange(7000))
    ch = stack.clickhouse_client()
    assert ch.execute(f"SELECT count() FROM callback.cdr WHERE toDate(start_time) = '{day}'")[0][0] == 0
    publish_reference(run)
    scenario = build(run, day)
    produce("callback.legs", leg_records(scenario.legs))
    stored = f"SELECT count() FROM callback.callback_outcomes_daily FINAL WHERE day = '{day}'"
    assert wait_until(lambda: ch.execute(stored)[0][0] == len(scenario.legs), 60, interval=0.5)
    q = doc_queries(day)
    D = Decimal

    assert ch.execute(q["revenue_per_day"]) == [(day, "USD", D("0.51"), 5.0, 12)]
    assert ch.execute(q["revenue_per_did"]) == [(DID, "USD", D("0.51"), 4.5)]
    assert ch.execute(q["asr_acd_per_destination"]) == [
        (f"{run}-retail", "34", 1, 1, 100.0, 60.0, D("0.08")),
        (f"{run}-retail", "44", 1, 0, 0.0, 0.0, D("0")),
    ]
    assert ch.execute(q["callback_success_and_retries"]) == [(day, 6, 1, 16.67, 1, 0.17)]
    assert ch.execute(q["unauthenticated_leg_a_cost"]) == [(day, "USD", 2, 1, 30, D("0.20"))]
    assert ch.execute(q["top_refused_origins"]) == [("8821234", 2, 1), ("99912345", 1, 1)]
    history = ch.execute(q["price_history"])
    assert len(history) == len(scenario.legs) and {row[1] for row in history} == {1}
    ch.disconnect()
