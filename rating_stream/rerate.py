"""``callback rerate``: re-price stored legs after a tariff change, through the normal path.

The current version of each leg is read from ClickHouse (``cdr FINAL``), priced again with the
tariffs now on ``config.tariffs``, and every leg whose price or terms (the destination name too)
changed gets a new ``RatedCdr`` (version + 1) on ``cdr.rated``; the sink stores it like any CDR,
``cdr FINAL`` shows the new price and ``cdr_versions`` keeps the old one as history. Legs stored
before CDRs carried a destination name get it this way, at an unchanged price.

Balances follow: each payer is debited (or refunded) new price minus old price. Only the rater
holding a payer's partition writes its balance, so ``rerate`` does not: it publishes each new CDR
with the price it replaces on ``cdr.rerates`` (keyed by payer, partitioned like the legs), and the
running raters apply them, CDR, ledger entry and balance in one transaction, without being stopped
or fenced. Re-running is harmless: legs already at the new price do not change, and a version a
rater has already applied to a leg (the sink not having stored it yet) is dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from confluent_kafka import KafkaError, Producer

from callback.clickhouse_io import clickhouse_client
from callback.kafka_io import producer_config
from callback.reference_feed import ReferenceFeed
from rating_stream.cdr import CDR_COLUMNS, rated_cdr
from rating_stream.engine import Quote, RatingError, quote
from rating_stream.payer import payer_terms
from rating_stream.rater import RaterOptions
from schemas.callback import Disposition, FinishedLeg, LegType, Payer, PayerKind
from schemas.rating import RerateRequest

log = logging.getLogger(__name__)

@dataclass
class RerateReport:
    examined: int = 0
    changed: int = 0
    unrateable: Counter[str] = field(default_factory=Counter)
    delta_by_payer: dict[str, Decimal] = field(default_factory=dict)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would re-price" if self.dry_run else "re-priced"
        lines = [f"examined {self.examined} legs, {verb} {self.changed}"]
        if self.changed and not self.dry_run:
            lines.append("  published on cdr.rerates: the running raters apply them with the balances")
        for kind, n in sorted(self.unrateable.items()):
            lines.append(f"  left as they were, cannot be rated now ({kind}): {n}")
        for key, delta in sorted(self.delta_by_payer.items()):
            lines.append(f"  {key:40} {'charge' if delta > 0 else 'refund'} {abs(delta)}")
        return "\n".join(lines)


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _at(t: datetime | None, ms: int) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) + timedelta(milliseconds=ms)


def leg_from_row(row: dict[str, Any]) -> FinishedLeg:
    """The finished leg a stored CDR row (column name -> value, ``CDR_COLUMNS``) describes."""
    return FinishedLeg(
        source="rerate",
        leg_id=row["leg_id"],
        callback_id=row["callback_id"],
        leg=LegType(row["leg"]),
        attempt=row["attempt"],
        pbx_id=row["pbx_id"] or None,
        did=row["did"] or None,
        src=row["src"] or None,
        dst=row["dst"],
        started_at=_at(row["start_time"], row["start_ms"]),
        answered_at=_at(row["answer_time"], row["answer_ms"]),
        ended_at=_at(row["end_time"], row["end_ms"]),
        disposition=Disposition(row["disposition"]),
        q850_cause=row["q850_cause"],
        sip_code=row["sip_code"],
        payer=Payer(kind=PayerKind(row["payer_kind"]), id=row["payer_id"]),
        auth_method=row["auth_method"] or None,
        final_state=row["final_state"] or None,
    )


def _terms(q: Quote) -> dict[str, Any]:
    """The terms ``q`` prices a leg by, under the ``cdr`` columns that store them."""
    r = q.rate
    return {
        "tariff_id": q.tariff_id,
        "matched_prefix": q.matched_prefix,
        "destination": r.destination,
        "rate_per_minute": r.rate_per_minute,
        "connection_fee": r.connection_fee,
        "increment_s": r.increment_s,
        "minimal_time_s": r.minimal_time_s,
        "grace_time_s": r.grace_time_s,
        "billed_s": q.billed_s,
    }


def rerate(
    since: datetime,
    until: datetime | None = None,
    *,
    dry_run: bool = False,
    options: RaterOptions | None = None,
    table: str = "callback.cdr",
) -> RerateReport:
    opt = options or RaterOptions()
    report = RerateReport(dry_run=dry_run)
    feed = ReferenceFeed(opt.reference_topics)
    try:
        ref = feed.load()
    finally:
        feed.close()
    where = "start_time >= %(since)s" + (" AND start_time < %(until)s" if until else "")
    client = clickhouse_client()
    params = {"since": since.replace(tzinfo=None), "until": until.replace(tzinfo=None) if until else None}
    rows = client.execute(
        f"SELECT {', '.join(CDR_COLUMNS)} FROM {table} FINAL WHERE {where} ORDER BY leg_id", params
    )
    client.disconnect()

    changes = []
    for values in rows:
        report.examined += 1
        row = dict(zip(CDR_COLUMNS, values, strict=True))
        leg, old_price, version = leg_from_row(row), row["price"], row["version"]
        try:
            terms = payer_terms(leg.payer, ref)
            q = quote(terms.tariff, leg.dst, leg.billsec_ms, leg.answered_at is not None)
        except RatingError as exc:
            report.unrateable[exc.kind] += 1
            log.warning("rerate: leg %s left at version %d: %s", leg.leg_id, version, exc.reason)
            continue
        new_terms = _terms(q)
        if q.price == old_price and new_terms == {column: row[column] for column in new_terms}:
            continue
        changes.append((leg, q, old_price, version))
        delta = q.price - old_price
        report.delta_by_payer[leg.payer.key] = report.delta_by_payer.get(leg.payer.key, Decimal(0)) + delta
    report.changed = len(changes)
    report.delta_by_payer = {k: v for k, v in report.delta_by_payer.items() if v != 0}
    if dry_run or not changes:
        return report

    now = datetime.now(UTC)
    requests = [
        RerateRequest(
            source="rerate",
            previous_price=old_price,
            cdr=rated_cdr(leg, q, version=version + 1, rated_at=now, source="rerate"),
        )
        for leg, q, old_price, version in changes
    ]
    publish_rerates(requests, opt.rerates_topic)
    log.info("rerate published %d re-priced legs on %s for the raters", len(requests), opt.rerates_topic)
    return report


def publish_rerates(requests: list[RerateRequest], topic: str, timeout_s: float = 60.0) -> None:
    """Every request on ``topic`` keyed by payer (acks=all), or ``RuntimeError`` naming how many were
    not delivered: a partial run is safe to repeat (applied versions are dropped)."""
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err.str())

    producer = Producer(producer_config())
    for request in requests:
        key = request.cdr.payer.key.encode()
        producer.produce(topic, request.model_dump_json().encode(), key, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(timeout_s)
    if left or failed:
        raise RuntimeError(
            f"{left + len(failed)} of {len(requests)} re-rates not delivered to {topic} "
            f"({failed[:1] or 'timed out'}); run the same rerate again"
        )
