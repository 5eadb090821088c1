"""The rated CDR, both ways: (leg, quote) -> ``RatedCdr`` for Kafka, and its JSON -> a ClickHouse row.

Pure functions. ``CDR_COLUMNS`` here is the one list of the ``cdr`` table's columns and their order,
and the single place that must agree with the table its migrations build (a unit test compares
them, an integration test inserts through it into the real table); the sink inserts by it, the
rating bench's pass-through table and ``callback rerate``'s read take their columns from it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rating_stream.engine import Quote
from rating_stream.wire import CdrWire, LegWire, encode_cdr
from schemas.callback import FinishedLeg, ms_between
from schemas.envelope import SCHEMA_VERSION
from schemas.rating import RatedCdr
from schemas.reference import Rate

_LEG, _RATING = "leg", "rating"
#: Every column the sink fills, in the order ``cdr_row`` yields them (inserted_at takes its default),
#: with what fills it: the finished leg as it came (``_LEG``), or rating (``_RATING``: the CDR's
#: version, the durations in whole seconds, the terms the leg was priced by, its price and when)
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("leg_id", _LEG),
    ("callback_id", _LEG),
    ("attempt", _LEG),
    ("leg", _LEG),
    ("version", _RATING),
    ("src", _LEG),
    ("dst", _LEG),
    ("did", _LEG),
    ("pbx_id", _LEG),
    ("start_time", _LEG),
    ("start_ms", _LEG),
    ("answer_time", _LEG),
    ("answer_ms", _LEG),
    ("end_time", _LEG),
    ("end_ms", _LEG),
    ("duration", _RATING),
    ("billsec", _RATING),
    ("duration_ms", _RATING),
    ("billsec_ms", _RATING),
    ("billed_s", _RATING),
    ("disposition", _LEG),
    ("q850_cause", _LEG),
    ("sip_code", _LEG),
    ("payer_kind", _LEG),
    ("payer_id", _LEG),
    ("tariff_id", _RATING),
    ("matched_prefix", _RATING),
    ("destination", _RATING),
    ("rate_per_minute", _RATING),
    ("connection_fee", _RATING),
    ("increment_s", _RATING),
    ("minimal_time_s", _RATING),
    ("grace_time_s", _RATING),
    ("price", _RATING),
    ("currency", _RATING),
    ("auth_method", _LEG),
    ("final_state", _LEG),
    ("rated_at", _RATING),
    ("rated_ms", _RATING),
)
CDR_COLUMNS: tuple[str, ...] = tuple(name for name, _filled_by in _COLUMNS)
#: The finished leg's own columns, in ``CDR_COLUMNS`` order: what a leg fills before it is rated
LEG_COLUMNS: tuple[str, ...] = tuple(name for name, filled_by in _COLUMNS if filled_by == _LEG)


def rated_cdr(leg: FinishedLeg, q: Quote, *, version: int, rated_at: datetime, source: str) -> RatedCdr:
    """The CDR of ``leg`` priced by ``q``; ``version`` orders re-rates (higher wins)."""
    rate = q.rate
    return RatedCdr(
        source=source,
        leg_id=leg.leg_id,
        callback_id=leg.callback_id,
        leg=leg.leg,
        attempt=leg.attempt,
        version=version,
        pbx_id=leg.pbx_id,
        did=leg.did,
        src=leg.src,
        dst=leg.dst,
        started_at=leg.started_at,
        answered_at=leg.answered_at,
        ended_at=leg.ended_at,
        duration_ms=leg.duration_ms,
        billsec_ms=leg.billsec_ms,
        billed_s=q.billed_s,
        disposition=leg.disposition,
        q850_cause=leg.q850_cause,
        sip_code=leg.sip_code,
        payer_kind=leg.payer.kind,
        payer_id=leg.payer.id,
        tariff_id=q.tariff_id,
        matched_prefix=q.matched_prefix,
        destination=rate.destination,
        rate_per_minute=rate.rate_per_minute,
        connection_fee=rate.connection_fee,
        increment_s=rate.increment_s,
        minimal_time_s=rate.minimal_time_s,
        grace_time_s=rate.grace_time_s,
        price=q.price,
        currency=q.currency,
        auth_method=leg.auth_method,
        final_state=leg.final_state,
        rated_at=rated_at,
    )


def cdr_event_id(leg_id: str, version: int) -> str:
    """Deterministic id of a CDR version: every charge carries a deterministic id
    (docs/architecture.md, "Guarantees")."""
    readable = f"cdr:{leg_id}:{version}"
    return readable if len(readable) <= 128 else "cdr:" + hashlib.sha256(readable.encode()).hexdigest()


#: Rate -> its CDR fields, formatted once. Rates are immutable and few (thousands at most), while a
#: rate prices millions of legs; keyed by identity with the rate kept alive beside its terms, so an
#: id is never reused for another rate while its entry exists.
_RATE_TERMS: dict[int, tuple[Rate, tuple[str, str, str, str, int, int, int]]] = {}


def _rate_terms(rate: Rate) -> tuple[str, str, str, str, int, int, int]:
    """The CDR's last fields, in ``CdrWire`` order: matched prefix, destination, rate, fee,
    increment, minimal time and grace time."""
    cached = _RATE_TERMS.get(id(rate))
    if cached is not None and cached[0] is rate:
        return cached[1]
    terms = (
        rate.prefix,
        rate.destination,
        format(rate.rate_per_minute, "f"),
        format(rate.connection_fee, "f"),
        rate.increment_s,
        rate.minimal_time_s,
        rate.grace_time_s,
    )
    if len(_RATE_TERMS) > 100_000:  # tariffs were replaced many times over: start afresh
        _RATE_TERMS.clear()
    _RATE_TERMS[id(rate)] = (rate, terms)
    return terms


def cdr_json(leg: LegWire, q: Quote, *, version: int, rated_at: datetime, source: str) -> bytes:
    """The same record as ``rated_cdr(...).model_dump_json()``, built without pydantic.

    The rater's hot path: validating and serialising a 37-field model per leg costs more than
    rating it, so the fields go positionally into ``CdrWire`` and msgspec writes them. Unit tests
    hold this to the contract (its output validates as ``RatedCdr`` and equals ``rated_cdr`` field
    by field) and to what the rater wrote before (``tests/unit/test_rating_golden.py``).
    """
    w = leg
    started, answered, ended = leg.started_at, leg.answered_at, leg.ended_at
    payer = w.payer
    return encode_cdr(
        CdrWire(
            cdr_event_id(w.leg_id, version),
            SCHEMA_VERSION,
            rated_at,
            source,
            "cdr.rated",
            w.leg_id,
            w.callback_id,
            w.leg,
            w.attempt,
            version,
            w.pbx_id,
            w.did,
            w.src,
            w.dst,
            started,
            answered,
            ended,
            ms_between(started, ended),
            0 if answered is None else ms_between(answered, ended),
            q.billed_s,
            w.disposition,
            w.q850_cause,
            w.sip_code,
            payer.kind,
            payer.id,
            q.tariff_id,
            format(q.price, "f"),
            q.currency,
            w.auth_method,
            w.final_state,
            rated_at,
            *_rate_terms(q.rate),
        )
    )


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _seconds_up(ms: int) -> int:
    return -(-ms // 1000)


def _epoch(text: str) -> tuple[int, int]:
    """(epoch seconds, milliseconds) of an ISO 8601 time: ClickHouse's DateTime + *_ms columns.
    Integers go to the driver as they are, skipping its costly per-value timezone conversion."""
    t = _time(text)
    return int(t.timestamp()), t.microsecond // 1000


def cdr_row(d: dict[str, Any]) -> tuple:
    """One ``cdr`` row from a decoded ``cdr.rated`` JSON object (as produced by ``RatedCdr``).

    Deliberately not a pydantic round trip: the sink handles tens of thousands of rows a second,
    and the record was validated when the rater built it. A missing or mistyped field raises
    (KeyError/ValueError/TypeError), which the sink dead-letters.
    """
    start, start_ms = _epoch(d["started_at"])
    end, end_ms = _epoch(d["ended_at"])
    answered = d.get("answered_at")
    answer, answer_ms = _epoch(answered) if answered else (None, 0)
    rated, rated_ms = _epoch(d["rated_at"])
    duration_ms = int(d["duration_ms"])
    billsec_ms = int(d["billsec_ms"])
    return (
        d["leg_id"],
        d["callback_id"],
        int(d["attempt"]),
        d["leg"],
        int(d["version"]),
        d.get("src") or "",
        d["dst"],
        d.get("did") or "",
        d.get("pbx_id") or "",
        start,
        start_ms,
        answer,
        answer_ms,
        end,
        end_ms,
        _seconds_up(duration_ms),
        _seconds_up(billsec_ms),
        duration_ms,
        billsec_ms,
        int(d["billed_s"]),
        d["disposition"],
        d.get("q850_cause"),
        d.get("sip_code"),
        d["payer_kind"],
        d["payer_id"],
        d["tariff_id"],
        d["matched_prefix"],
        d.get("destination") or "",  # absent from CDRs rated before it existed
        Decimal(d["rate_per_minute"]),
        Decimal(d["connection_fee"]),
        int(d["increment_s"]),
        int(d["minimal_time_s"]),
        int(d["grace_time_s"]),
        Decimal(d["price"]),
        d["currency"],
        d.get("auth_method") or "",
        d.get("final_state") or "",
        rated,
        rated_ms,
    )
