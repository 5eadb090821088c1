"""Every query of docs/analytics.md and of the README, exactly as the documents write it, finds
today's legs (issue 12, done-when: each runs on a real ClickHouse with data from the pipeline and
returns rows).

Today's legs of a small scenario go through the real rater and CDR sink. Other tests share the
stack, so the figures checked here are the ones this run can own: its tariffs give every
destination a name of this run's, so revenue by destination must equal, name by name, the sum of
the prices the rater published on ``cdr.rated`` for this run. Exact answers of every query on a
day of its own are checked by test_rating_analytics.py. The column lists of docs/analytics.md are
compared with the server's tables, and the cause table with schemas/hangup_causes.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from callback.topic_reader import read_topics
from infra.process import wait_until
from rating_stream.loadgen import leg_records, produce, publish_reference, tariffs
from schemas.hangup_causes import Q850_CAUSES
from tests.analytics_docs import all_documented_queries, build, documented_columns

pytestmark = pytest.mark.integration


def _with_run_destinations(run: str):
    """This run's tariffs, each destination name ending in the run id."""
    def named(rate):
        return rate.model_copy(update={"destination": f"{rate.destination} {run}"})

    return [t.model_copy(update={"rates": [named(r) for r in t.rates]}) for t in tariffs(run)]


def _rated(run: str) -> dict[str, dict]:
    """leg_id -> the last CDR the rater published on ``cdr.rated`` for a leg of this run."""
    out: dict[str, dict] = {}

    def keep(message) -> None:
        cdr = orjson.loads(message.value())
        if cdr["callback_id"].startswith(f"{run}-"):
            out[cdr["leg_id"]] = cdr

    read_topics(f"analytics-docs-{run}", ["cdr.rated"], keep)
    return out


def test_every_documented_query_finds_todays_legs(rater_and_sink, stack):
    run = f"ad{uuid.uuid4().hex[:8]}"
    publish_reference(run, tariff_list=_with_run_destinations(run))
    now = datetime.now(UTC).replace(microsecond=0)
    start = max(now - timedelta(minutes=20), now.replace(hour=0, minute=0, second=0))
    scenario = build(run, start)
    produce("callback.legs", leg_records(scenario.legs))
    ch = stack.clickhouse_client()
    ids = ", ".join(f"'{leg.leg_id}'" for leg in scenario.legs)
    stored = f"SELECT count() FROM callback.cdr FINAL WHERE leg_id IN ({ids})"
    assert wait_until(lambda: ch.execute(stored)[0][0] == len(scenario.legs), 60, interval=0.5)
    views = f"SELECT count() FROM callback.callback_outcomes_daily FINAL WHERE leg_id IN ({ids})"
    assert ch.execute(views)[0][0] == len(scenario.legs)

    queries = all_documented_queries()
    assert len(queries) >= 11, sorted(queries)
    answers = {}
    for name, sql in queries.items():
        answers[name] = ch.execute(sql)
        assert answers[name], f"{name} returns no rows on today's legs:\n{sql}"

    # revenue by destination: this run's names, equal to the rater's own output for legs A and B
    rated = _rated(run)
    assert set(rated) == {leg.leg_id for leg in scenario.legs}
    expected: dict[str, tuple[int, Decimal]] = {}
    for cdr in rated.values():
        if cdr["leg"] in ("a", "b"):
            legs, revenue = expected.get(cdr["destination"], (0, Decimal(0)))
            expected[cdr["destination"]] = (legs + 1, revenue + Decimal(cdr["price"]))
    assert all(name.endswith(f" {run}") for name in expected), expected
    assert sum(revenue for _legs, revenue in expected.values()) == Decimal("0.51")
    ours = {
        destination: (legs, revenue)
        for destination, _currency, legs, _answered, _minutes, revenue in answers[
            "analytics.md:revenue_by_destination"
        ]
        if destination.endswith(f" {run}")
    }
    assert ours == expected

    # failed calls by hangup cause: this run's two failures among them, named from the cause table
    names = {c.q850: (c.q850_text, c.sip_code, c.sip_text) for c in Q850_CAUSES}
    failed = answers["analytics.md:failed_calls_by_hangup_cause"]
    assert {("a", 19), ("b", 17)} <= {(leg, cause) for leg, cause, *_rest in failed}
    for _leg, cause, text, sip, sip_text, count in failed:
        assert count > 0 and (text, sip, sip_text) == names.get(cause, ("", None, "")), (cause, text)

    today = ch.execute("SELECT today()")[0][0]
    by_day = {row[0]: row for row in answers["analytics.md:callback_success_and_retries"]}
    assert by_day[start.date()][1] >= 6 and max(by_day) <= today
    ch.disconnect()


def test_the_documented_columns_are_the_servers(stack):
    ch = stack.clickhouse_client()
    tables = [
        name
        for name, engine in ch.execute("SELECT name, engine FROM system.tables WHERE database = 'callback'")
        if engine != "MaterializedView" and name != "schema_migrations"
    ]
    documented = documented_columns()
    assert sorted(documented) == sorted(f"callback.{t}" for t in tables)
    for table, columns in documented.items():
        server = [(name, ch_type) for name, ch_type, *_rest in ch.execute(f"DESCRIBE TABLE {table}")]
        assert [name for name, _t in columns] == [name for name, _t in server], table
        for (name, doc_type), (_name, ch_type) in zip(columns, server, strict=True):
            assert doc_type == ch_type or (doc_type == "Enum8" and ch_type.startswith("Enum8(")), (
                f"{table}.{name}: documented {doc_type}, server {ch_type}"
            )
    causes = "SELECT q850_cause, q850_text, sip_code, sip_text FROM callback.hangup_causes ORDER BY 1"
    rows = ch.execute(causes)
    assert rows == [(c.q850, c.q850_text, c.sip_code, c.sip_text) for c in Q850_CAUSES]
    ch.disconnect()
