"""The rater's fast leg decoder against the contract (``FinishedLeg``): it may leave a record to the
model, but what it accepts the model accepts, with the same values, offsets included
(rating_stream/wire.py, docs/rating.md "Speed")."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rating_stream import wire
from rating_stream.loadgen import make_legs
from schemas.callback import FinishedLeg

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BASES = [orjson.loads(leg.model_dump_json()) for leg in make_legs("wire", 12, start=START)]

TIMES = [
    "2026-11-30T12:00:00Z",
    "2026-11-30T12:00:00.5Z",
    "2026-11-30T12:00:00.123456Z",
    "2026-11-30T12:00:00.1234567Z",
    "2026-11-30T12:00:00.9999999Z",
    "2026-11-30T12:00:00.123456789+02:00",
    "2026-11-30T12:00:00,5Z",
    "2026-11-30T12:00:00+00:00",
    "2026-11-30T12:00:00-00:00",
    "2026-11-30T14:00:00+02:00",
    "2026-11-30T06:30:00-05:30",
    "2026-11-30T12:00:00+0200",
    "2026-11-30T12:00:00+02",
    "2026-11-30t12:00:00z",
    "2026-11-30 12:00:00Z",
    "2026-11-30T12:00Z",
    "2026-11-30T12:00:00",
    "2026-11-30",
    "20261130T120000Z",
    "2026-W48-1T12:00:00Z",
    "2026-11-30T24:00:00Z",
    "2026-11-30T23:59:60Z",
    "2026-02-30T12:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2106-02-07T06:28:15Z",
    "2106-02-07T06:28:15.001Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "2026-11-30T12:00:00+24:00",
    "2026-11-30T12:00:00.Z",
    " 2026-11-30T12:00:00Z",
    "2026-11-30T12:00:00Z\n",
    1764504000,
    1764504000.5,
    "1764504000",
    None,
    "",
]
TEXTS = [
    "",
    "a",
    "2341234567",
    "2341234567\n",
    "\u0662\u0663\u0664",
    "２３４",
    "+2341234567",
    "x" * 64,
    "x" * 65,
    "x" * 128,
    "x" * 161,
    "has space",
    "ok-id_1.2:3",
    "é",
    "\ud83d\ude00",
    "0" * 20,
    "0" * 21,
    3,
    True,
    None,
    1.5,
    [],
    {},
]
INTS = [0, 1, -1, 127, 128, 65_535, 65_536, 100, 99, 699, 700, 2, "3", True, False, 1.0, 3.5, None, 2**70]
ENUMS = ["ANSWERED", "NO ANSWER", "answered", "a", "b", "initiation", "c", "user", "card", "device_pin",
         "completed", "", None, 1]
FIELDS = {
    "event_id": TEXTS,
    "time": TIMES,
    "source": TEXTS,
    "leg_id": TEXTS,
    "callback_id": TEXTS,
    "leg": ENUMS,
    "dst": TEXTS,
    "src": TEXTS,
    "did": TEXTS,
    "pbx_id": TEXTS,
    "started_at": TIMES,
    "answered_at": TIMES,
    "ended_at": TIMES,
    "disposition": ENUMS,
    "q850_cause": INTS,
    "sip_code": INTS,
    "attempt": INTS,
    "schema_version": INTS,
    "type": ["callback.leg", "callback.transition", None, ""],
    "auth_method": ENUMS,
    "final_state": ENUMS,
    "payer": [
        {"kind": "user", "id": "wire-u1"},
        {"kind": "user", "id": "bad id"},
        {"kind": "user", "id": "x" * 65},
        {"kind": "user"},
        {"kind": "friend", "id": "x"},
        {"kind": "user", "id": "a", "extra": 1},
        "user:a",
        None,
    ],
}
MISSING = object()


@st.composite
def records(draw) -> bytes:
    record = dict(draw(st.sampled_from(BASES)))
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True)):
        value = draw(st.sampled_from([*FIELDS[name], MISSING]))
        if value is MISSING:
            record.pop(name, None)
        else:
            record[name] = value
    if draw(st.booleans()):
        record["extra"] = 1 if draw(st.booleans()) else None
        if draw(st.booleans()):
            record.pop("extra")
    raw = json.dumps(record).encode()  # json: integers beyond 64 bits too
    if draw(st.integers(0, 9)) == 0:  # a key named twice: both readers take the last
        raw = raw[:1] + b'"leg":"c",' + raw[1:]
    return raw


def _model(raw: bytes) -> FinishedLeg | None:
    try:
        return FinishedLeg.model_validate_json(raw)
    except ValidationError:
        return None


def _encoded(leg: wire.LegWire) -> bytes:
    """A decoded leg as bytes, to compare two readings; without its event id and time, which the
    model makes up afresh (a random id, the time now) for a record that has none."""
    return msgspec.json.encode(msgspec.structs.replace(leg, event_id="-", time=START))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_what_the_fast_path_accepts_the_model_accepts_alike(raw):
    model, fast = _model(raw), wire.fast_leg(raw)
    if fast is not None:
        assert model is not None, f"fast path accepted what the model refuses: {raw!r}"
        assert msgspec.json.encode(fast) == msgspec.json.encode(wire.from_model(model))  # ids too
    # and whatever path it takes, decode_leg agrees with the model
    if model is None:
        with pytest.raises(ValidationError):
            wire.decode_leg(raw)
    else:
        assert _encoded(wire.decode_leg(raw)) == _encoded(wire.from_model(model))


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_field_of_the_contract_is_read(name):
    assert set(FinishedLeg.model_fields) == set(wire.LegWire.__struct_fields__)
    assert name in wire.LegWire.__struct_fields__


def test_the_processors_legs_take_the_fast_path():
    """The legs the pipeline writes are the common case: none of them may fall back to the model."""
    for leg in make_legs("wire", 500, start=START):
        assert wire.fast_leg(leg.model_dump_json().encode()) is not None


@pytest.mark.parametrize(
    "field, value",
    [("started_at", "2026-11-30T12:00:00.9999999Z"), ("dst", "2341234567\n"), ("dst", "\u0662\u0663")],
)
def test_what_the_fast_path_cannot_vouch_for_goes_to_the_model(field, value):
    raw = orjson.dumps({**BASES[0], field: value})
    assert wire.fast_leg(raw) is None
