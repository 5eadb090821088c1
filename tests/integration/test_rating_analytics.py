"""Every query of docs/analytics.md and of the README answers a known scenario right.

The scenario is placed on a day of its own (random, decades ago), and the documented date range is
replaced by that day (``on_day``), so the answers depend only on this test's legs.
tests/integration/test_analytics_docs.py runs the same queries as written, on today's data.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from infra.process import wait_until
from rating_stream.loadgen import leg_records, produce, publish_reference
from schemas.callback import Disposition, LegType, SessionState
from tests.analytics_docs import ANALYTICS, DID, README, Scenario, build, documented_queries, on_day

pytestmark = pytest.mark.integration
D = Decimal


def _a_free_day(ch) -> date:
    day = date(1990, 1, 1) + timedelta(days=random.randrange(7000))
    near = f"SELECT count() FROM callback.cdr WHERE start_time BETWEEN '{day - timedelta(days=2)} 00:00:00' "
    near += f"AND '{day + timedelta(days=2)} 23:59:59'"
    assert ch.execute(near)[0][0] == 0
    return day


def _stored(ch, scenario: Scenario) -> bool:
    ids = ", ".join(f"'{leg.leg_id}'" for leg in scenario.legs)
    found = ch.execute(f"SELECT count() FROM callback.callback_outcomes_daily FINAL WHERE leg_id IN ({ids})")
    return found[0][0] == len(scenario.legs)


def test_documented_queries_answer_the_scenario(rater_and_sink, stack):
    run = f"ra{uuid.uuid4().hex[:8]}"
    ch = stack.clickhouse_client()
    day = _a_free_day(ch)
    publish_reference(run)
    scenario = build(run, datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC))
    produce("callback.legs", leg_records(scenario.legs))
    assert wait_until(lambda: _stored(ch, scenario), 60, interval=0.5)
    q = {name: on_day(sql, day) for name, sql in documented_queries(ANALYTICS).items()}

    assert ch.execute(q["revenue_per_day"]) == [(day, "USD", D("0.51"), 5.0, 12)]
    assert ch.execute(q["revenue_per_did"]) == [(DID, "USD", D("0.51"), 4.5)]
    assert ch.execute(q["asr_acd_per_destination"]) == [
        (f"{run}-retail", "34", 1, 1, 100.0, 60.0, D("0.08")),
        (f"{run}-retail", "44", 1, 0, 0.0, 0.0, D("0")),
    ]
    assert ch.execute(q["callback_success_and_retries"]) == [(day, 6, 1, 16.67, 1, 0.17)]
    assert ch.execute(q["failed_calls_by_hangup_cause"]) == [
        ("a", 19, "no answer from the user", 480, "Temporarily unavailable", 1),
        ("b", 17, "user busy", 486, "Busy here", 1),
    ]
    # leg A to Nigeria: 60 s at 0.20 (user), unanswered and 30 s -> 60 s at 0.20 (the owner);
    # Spain 60 s at 0.08; leg A to the US 120 s at 0.015; leg B to the UK busy
    assert ch.execute(q["revenue_by_destination"]) == [
        ("Nigeria", "USD", 3, 2, 2.0, D("0.40")),
        ("Spain", "USD", 1, 1, 1.0, D("0.08")),
        ("USA/Canada", "USD", 1, 1, 2.0, D("0.03")),
        ("United Kingdom", "USD", 1, 0, 0.0, D("0")),
    ]
    assert ch.execute(q["unauthenticated_leg_a_cost"]) == [(day, "USD", 2, 1, 30, D("0.20"))]
    assert ch.execute(q["top_refused_origins"]) == [("8821234", 2, 1), ("99912345", 1, 1)]
    history = ch.execute(q["price_history"])
    assert len(history) == len(scenario.legs) and {row[1] for row in history} == {1}

    readme = {name: on_day(sql, day) for name, sql in documented_queries(README).items()}
    assert ch.execute(readme["revenue_per_day"]) == [(day, "USD", D("0.51"), 5.0)]
    assert ch.execute(readme["unauthenticated_leg_a_cost"]) == [(day, "USD", 2, 30, D("0.20"))]
    ch.disconnect()


def test_a_callback_across_midnight_counts_once_on_the_day_it_started(rater_and_sink, stack):
    """Issue 12 item 6: initiated at 23:58, connected after midnight, the callback is one success
    on its first day and nothing on the next; one that started the day before is not counted."""
    run = f"rm{uuid.uuid4().hex[:8]}"
    ch = stack.clickhouse_client()
    day = _a_free_day(ch)
    publish_reference(run)
    done = SessionState.COMPLETED
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    s = Scenario(run, midnight - timedelta(minutes=3))  # the day before: 23:58, 23:59, then 00:00
    s.leg(1, LegType.INITIATION, "2341234567", s.owner, done, None)
    s.leg(1, LegType.A, "2341234567", s.user, done, 60)
    s.leg(1, LegType.B, "34911234567", s.user, done, 30)
    s.t = midnight + timedelta(days=1, minutes=-3)  # this day: 23:58, 23:59 unanswered, retried 00:00
    s.leg(2, LegType.INITIATION, "2341234567", s.owner, done, None)
    s.leg(2, LegType.A, "2341234567", s.user, done, None, attempt=0, cause=19)
    s.leg(2, LegType.A, "2341234567", s.user, done, 60, attempt=1)
    s.leg(2, LegType.B, "34911234567", s.user, done, 30, Disposition.ANSWERED)
    produce("callback.legs", leg_records(s.legs))
    assert wait_until(lambda: _stored(ch, s), 60, interval=0.5)
    success = documented_queries(ANALYTICS)["callback_success_and_retries"]

    before, after = day - timedelta(days=1), day + timedelta(days=1)
    assert ch.execute(on_day(success, before)) == [(before, 1, 1, 100.0, 0, 0.0)]
    assert ch.execute(on_day(success, day)) == [(day, 1, 1, 100.0, 1, 1.0)]
    assert ch.execute(on_day(success, after)) == []
    ch.disconnect()
