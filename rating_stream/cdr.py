"""The rated CDR, both ways: (leg, quote) -> ``RatedCdr`` for Kafka, and its JSON -> a ClickHouse row.

Pure functions. ``CDR_COLUMNS`` here is the one list of the ``cdr`` table's columns and their order,
and the single place that must agree with the table its migrations build (a unit test compares
them, an integration test inserts through it into the real table); the sink inserts by it, the
rating bench's pass-through table and ``callback rerate``'s read take their columns from it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, get_args

import msgspec

from rating_stream.engine import Quote
from rating_stream.wire import CdrWire, LegWire, encode_cdr
from schemas.callback import FinishedLeg
from schemas.envelope import SCHEMA_VERSION, bounded_event_id, money_text
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
    return bounded_event_id(f"cdr:{leg_id}:{version}")


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
        money_text(rate.rate_per_minute),
        money_text(rate.connection_fee),
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
    payer = leg.payer
    return encode_cdr(
        CdrWire(
            cdr_event_id(leg.leg_id, version),
            SCHEMA_VERSION,
            rated_at,
            source,
            "cdr.rated",
            leg.leg_id,
            leg.callback_id,
            leg.leg,
            leg.attempt,
            version,
            leg.pbx_id,
            leg.did,
            leg.src,
            leg.dst,
            leg.started_at,
            leg.answered_at,
            leg.ended_at,
            leg.duration_ms,
            leg.billsec_ms,
            q.billed_s,
            leg.disposition,
            leg.q850_cause,
            leg.sip_code,
            payer.kind,
            payer.id,
            q.tariff_id,
            money_text(q.price),
            q.currency,
            leg.auth_method,
            leg.final_state,
            rated_at,
            *_rate_terms(q.rate),
        )
    )


def _seconds_up(ms: int) -> int:
    return -(-ms // 1000)


def epoch(t: datetime) -> tuple[int, int]:
    """(epoch seconds, milliseconds) of an aware time: ClickHouse's DateTime + *_ms columns.
    Integers go to the driver as they are, skipping its costly per-value timezone conversion."""
    return int(t.timestamp()), t.microsecond // 1000


def cdr_row(value: bytes) -> tuple:
    """One ``cdr`` row from a ``cdr.rated`` record (as the rater writes it: ``CdrWire``).

    Deliberately not a pydantic round trip: the sink handles tens of thousands of rows a second,
    and the record was validated when the rater built it. msgspec reads it into ``CdrIn`` (types
    checked, times parsed natively); money goes to the driver as the text it came as (the driver
    reads a Decimal column's values through ``str`` anyway, and refuses text that is no number,
    which the sink then sets aside by splitting the insert). A record that is not a CDR raises
    ``msgspec.MsgspecError``, and the sink dead-letters it.
    """
    c = _read_cdr(value)
    start, start_ms = epoch(c.started_at)
    end, end_ms = epoch(c.ended_at)
    answered = c.answered_at
    answer, answer_ms = epoch(answered) if answered is not None else (None, 0)
    rated, rated_ms = epoch(c.rated_at)
    duration_ms, billsec_ms = c.duration_ms, c.billsec_ms
    return (
        c.leg_id,
        c.callback_id,
        c.attempt,
        c.leg,
        c.version,
        c.src or "",
        c.dst,
        c.did or "",
        c.pbx_id or "",
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
        c.billed_s,
        c.disposition,
        c.q850_cause,
        c.sip_code,
        c.payer_kind,
        c.payer_id,
        c.tariff_id,
        c.matched_prefix,
        c.destination,
        c.rate_per_minute,
        c.connection_fee,
        c.increment_s,
        c.minimal_time_s,
        c.grace_time_s,
        c.price,
        c.currency,
        c.auth_method or "",
        c.final_state or "",
        rated,
        rated_ms,
    )


def _incoming(wire: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``CdrWire`` as the sink reads it, derived from it: a field that may be null may also be
    absent, ``destination`` may be absent (CDRs rated before it existed), every time must carry its
    offset, enumerations are read as their text (what the driver wants; the column checks it), the
    envelope (no column stores it) may be absent, and fields this code does not know are ignored."""
    fields: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(wire):
        optional = type(None) in get_args(f.type)
        kind = datetime if f.type is datetime or (optional and datetime in get_args(f.type)) else None
        tp = f.type
        if kind is datetime:
            tp = _AWARE | None if optional else _AWARE
        elif isinstance(f.type, type) and issubclass(f.type, StrEnum) or any(
            isinstance(a, type) and issubclass(a, StrEnum) for a in get_args(f.type)
        ):
            tp = str | None if optional else str  # ClickHouse's Enum8 refuses what is not one of its values
        if optional or f.name in _ENVELOPE:
            default = None
        else:
            default = "" if f.name == "destination" else msgspec.NODEFAULT
        fields.append((f.name, tp, default))
    return msgspec.defstruct("CdrIn", fields, kw_only=True, gc=False)


_AWARE = Annotated[datetime, msgspec.Meta(tz=True)]
_ENVELOPE = ("event_id", "schema_version", "time", "source", "type")
CdrIn = _incoming(CdrWire)
_read_cdr = msgspec.json.Decoder(CdrIn).decode
