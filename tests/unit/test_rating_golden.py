"""The rater's output, byte for byte, on a fixed set of legs: what rating said before a change to its
hot path must be what it says after (docs/rating.md, "Speed").

``tests/unit/data/rating_golden.jsonl`` was written by the rater as it was before the per-leg cost
was cut (issue "Rating at the speed of the machine"); this test rates the same inputs and compares
every CDR byte for byte, every rejection's kind and reason, every duplicate, and the balances. The
inputs go beyond what the processors write: times with other offsets and precisions, keys in another
order, optional fields left out or null, escapes, and malformed records of many kinds, because a
faster decoder must agree with the contract on those too.

Since then the CDR has gained one field, ``destination`` (the matched rate's name, for analysts):
the test takes it out of each CDR, checks it names the matched prefix's destination, and compares
the rest byte for byte with the file, which stays as the old rater wrote it.

To write the file again (only when rating is meant to change, saying why in the commit):
``RATING_GOLDEN_WRITE=1 .venv/bin/pytest tests/unit/test_rating_golden.py``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from callback.reference import ReferenceData
from rating_stream.batch import RatingBatch, RecentLegs
from rating_stream.loadgen import make_legs, reference_records, tariffs
from rating_stream.payer import Ledger

GOLDEN = Path(__file__).parent / "data" / "rating_golden.jsonl"
RUN = "gold"
START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RATED_AT = START + timedelta(hours=2)
TIME_FIELDS = ("started_at", "answered_at", "ended_at", "time")


def _with_offset(text: str, hours: int) -> str:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    from datetime import timezone

    return t.astimezone(timezone(timedelta(hours=hours))).isoformat()


def _variant(i: int, d: dict) -> bytes:
    """Leg ``i`` written one of the ways a producer other than ours may write it."""
    kind = i % 9
    if kind == 1:  # +00:00 instead of Z
        for f in TIME_FIELDS:
            if d.get(f):
                d[f] = d[f].replace("Z", "+00:00")
    elif kind == 2:  # another offset: the same instants
        for f in TIME_FIELDS:
            if d.get(f):
                d[f] = _with_offset(d[f], 2 if i % 2 else -5)
    elif kind == 3:  # microseconds, below the millisecond the CDR keeps
        for f in ("started_at", "ended_at"):
            d[f] = d[f].replace("Z", "").split(".")[0] + f".{(i * 7919) % 1_000_000:06d}Z"
    elif kind == 4:  # keys in reverse order
        d = dict(reversed(list(d.items())))
    elif kind == 5:  # optional fields left out instead of null
        d = {k: v for k, v in d.items() if v is not None}
    elif kind == 6:  # optional fields present
        d["sip_code"] = 486 if d["disposition"] == "BUSY" else 200
        d["did"] = None
        d["pbx_id"] = None
    elif kind == 7:  # JSON escapes in strings, whitespace between tokens
        return orjson.dumps(d, option=orjson.OPT_INDENT_2).replace(b'"pbx1"', b'"\\u0070bx1"')
    elif kind == 8:  # no fraction of a second at all
        for f in TIME_FIELDS:
            if d.get(f):
                d[f] = d[f].replace("Z", "").split(".")[0] + "Z"
    return orjson.dumps(d)


def _broken(base: dict) -> list[bytes]:
    """Records the rater must refuse, each for its own reason."""

    def changed(**fields) -> bytes:
        return orjson.dumps({**base, **fields})

    without = {k: v for k, v in base.items() if k != "dst"}
    return [
        b"",
        b"{not json",
        b"[1, 2]",
        b"null",
        orjson.dumps(without),
        changed(leg_id="gold-broken-1", extra_field=1),
        changed(leg_id="gold-broken-2", attempt="3"),
        changed(leg_id="gold-broken-3", attempt=True),
        changed(leg_id="gold-broken-4", attempt=-1),
        changed(leg_id="gold-broken-5", attempt=70_000),
        changed(leg_id="gold-broken-6", q850_cause=200),
        changed(leg_id="gold-broken-7", sip_code=99),
        changed(leg_id="gold-broken-8", disposition="HUNG UP"),
        changed(leg_id="gold-broken-9", leg="c"),
        changed(leg_id="gold-broken-10", started_at="2026-11-30T12:00:00"),
        changed(leg_id="gold-broken-11", started_at="yesterday"),
        changed(leg_id="gold-broken-12", started_at=1764504000),
        changed(leg_id="gold-broken-13", ended_at="2026-11-30T11:00:00Z"),
        changed(leg_id="gold-broken-14", disposition="BUSY"),
        changed(leg_id="gold-broken-15", dst="12ab"),
        changed(leg_id="gold-broken-16", dst=""),
        changed(leg_id="gold-broken-17", payer={"kind": "user"}),
        changed(leg_id="gold-broken-18", payer={"kind": "friend", "id": "x"}),
        changed(leg_id="gold-broken-19", payer={"kind": "user", "id": "nobody"}),
        changed(leg_id="gold-broken-20", schema_version=2),
        changed(leg_id="gold-broken-21", type="callback.transition"),
        changed(leg_id=""),
        changed(leg_id="x" * 161),
        changed(leg_id="gold-broken-22", callback_id="has space"),
        changed(leg_id="gold-broken-23", started_at="2200-01-01T00:00:00Z", ended_at="2200-01-01T00:01:00Z"),
        changed(leg_id="gold-broken-24", time=(START - timedelta(hours=7)).isoformat()),
        changed(leg_id="gold-broken-25", auth_method="telepathy"),
        changed(leg_id="gold-broken-26", final_state="asleep"),
        changed(leg_id="gold-broken-27", src=12345),
        changed(leg_id="gold-broken-28", event_id=None),
    ]


def golden_inputs() -> list[bytes]:
    values: list[bytes] = []
    for i, leg in enumerate(make_legs(RUN, 720, seed=11, start=START)):
        d = orjson.loads(leg.model_dump_json())
        d["event_id"] = f"leg-event-{i}"
        d["time"] = (leg.ended_at + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        values.append(_variant(i, d))
    base = orjson.loads(values[0])
    values += _broken(base)
    values += values[10:40]  # redelivered: already charged in this batch
    return values


#: prefix -> destination name of the run's tariffs (``loadgen.RATES`` and the origins tariff)
_NAMES = {rate.prefix: rate.destination for tariff in tariffs(RUN) for rate in tariff.rates}


def _without_destination(cdr: bytes) -> bytes:
    """The CDR as the rater wrote it before it carried ``destination``: the field, checked, taken out."""
    record = orjson.loads(cdr)
    name = record["destination"]
    assert name == _NAMES.get(record["matched_prefix"], name if record["price"] == "0.0000" else None)
    field = b',"destination":' + orjson.dumps(name)
    assert cdr.count(field) == 1
    return cdr.replace(field, b"")


def rate_golden_inputs() -> list[dict]:
    """Rate ``golden_inputs()`` as the rater does (one batch); one JSON-able entry per output."""
    ref = ReferenceData()
    for topic, key, value in reference_records(RUN):
        ref.apply(topic, key.decode(), value)
    batch = RatingBatch(
        ref, Ledger(), RecentLegs(6 * 3600.0, clock_skew_s=300.0), source="rating/gold", rated_at=RATED_AT
    )
    for i, value in enumerate(golden_inputs()):
        batch.add(i, value)
    result = batch.finish()
    out: list[dict] = [
        {"cdr": [key.decode(), _without_destination(value).decode()]} for key, value in result.cdrs
    ]
    out += [{"rejected": [i, why.error_kind, why.reason, why.leg_id]} for i, why in result.rejected]
    out.append({"duplicates": result.duplicates, "charged": str(result.charged)})
    for key, value in result.balances:
        balance = orjson.loads(value)
        balance.pop("event_id")  # a random id on every update
        out.append({"balance": [key.decode(), balance]})
    return out


def test_rating_is_byte_for_byte_what_it_was():
    got = rate_golden_inputs()
    if os.environ.get("RATING_GOLDEN_WRITE") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(b"".join(orjson.dumps(entry) + b"\n" for entry in got))
        pytest.skip(f"wrote {GOLDEN}")
    expected = [orjson.loads(line) for line in GOLDEN.read_bytes().splitlines()]
    cdrs = [e for e in expected if "cdr" in e]
    assert len(cdrs) > 600, "the golden file lost its CDRs"
    assert sum("rejected" in e for e in expected) > 30
    for want, have in zip(expected, got, strict=False):
        assert have == want
    assert len(got) == len(expected)
