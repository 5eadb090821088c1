"""Every contract field that reaches a ``callback.cdr`` column is bounded to what the column stores
(issue item 2).

A leg with ``q850_cause`` 70000 used to pass ``FinishedLeg`` and ``RatedCdr``; the column is a
``Nullable(UInt16)``, so ClickHouse refused the row and the sink retried its batch for ever. This
test reads the columns from the migrations themselves (``infra/migrations/0002_cdr.sql`` and the
``ALTER TABLE callback.cdr ADD COLUMN`` of later ones), maps each one
to the model fields it is filled from, and for each column type checks that the models refuse
every value just outside what the column holds (and that the refusal names that field, not some
other rule). A column added to the table without a mapping here fails the test.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from infra.migrate import discover
from schemas.callback import FinishedLeg
from schemas.rating import RatedCdr
from schemas.reference import Rate, Tariff

MIGRATION = Path(__file__).resolve().parents[2] / "infra" / "migrations" / "0002_cdr.sql"
_ADD_COLUMN = re.compile(r"ALTER TABLE callback\.cdr ADD COLUMN (\w+) (.+?)(?: AFTER (\w+))?\s*$", re.S)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_TIMES = ("started_at", "answered_at", "ended_at", "rated_at")


def cdr_columns() -> dict[str, str]:
    """name -> ClickHouse type of every column of ``callback.cdr``, from the migrations' SQL."""
    sql = MIGRATION.read_text()
    body = re.search(r"CREATE TABLE IF NOT EXISTS callback\.cdr\s*\((.*?)\n\)\s*\nENGINE", sql, re.S)
    assert body, "cannot find the cdr table in the migration"
    columns: dict[str, str] = {}
    for raw in body.group(1).splitlines():
        line = raw.split("--", 1)[0].strip().rstrip(",")
        if not line:
            continue
        name, ch_type = line.split(None, 1)
        columns[name] = re.split(r"\s+DEFAULT\s+", ch_type)[0].strip()
    for migration in discover():  # columns added since, where the ALTER puts them
        for statement in migration.statements():
            added = _ADD_COLUMN.match(statement)
            if added:
                name, ch_type, after = added.groups()
                order = list(columns.items())
                at = len(order) if after is None else [n for n, _t in order].index(after) + 1
                order.insert(at, (name, re.split(r"\s+DEFAULT\s+", ch_type)[0].strip()))
                columns = dict(order)
    return columns


# --- column -> where its value comes from -------------------------------------------------------

#: (model, dotted field) whose value is stored in the column as it is
Source = tuple[type[BaseModel], str]
LEG, CDR = FinishedLeg, RatedCdr

DIRECT: dict[str, list[Source]] = {
    "leg_id": [(CDR, "leg_id"), (LEG, "leg_id")],
    "callback_id": [(CDR, "callback_id"), (LEG, "callback_id")],
    "attempt": [(CDR, "attempt"), (LEG, "attempt")],
    "leg": [(CDR, "leg"), (LEG, "leg")],
    "version": [(CDR, "version")],
    "src": [(CDR, "src"), (LEG, "src")],
    "dst": [(CDR, "dst"), (LEG, "dst")],
    "did": [(CDR, "did"), (LEG, "did")],
    "pbx_id": [(CDR, "pbx_id"), (LEG, "pbx_id")],
    "start_time": [(CDR, "started_at"), (LEG, "started_at")],
    "answer_time": [(CDR, "answered_at"), (LEG, "answered_at")],
    "end_time": [(CDR, "ended_at"), (LEG, "ended_at")],
    "duration_ms": [(CDR, "duration_ms")],
    "billsec_ms": [(CDR, "billsec_ms")],
    "billed_s": [(CDR, "billed_s")],
    "disposition": [(CDR, "disposition"), (LEG, "disposition")],
    "q850_cause": [(CDR, "q850_cause"), (LEG, "q850_cause")],
    "sip_code": [(CDR, "sip_code"), (LEG, "sip_code")],
    "payer_kind": [(CDR, "payer_kind"), (LEG, "payer.kind")],
    "payer_id": [(CDR, "payer_id"), (LEG, "payer.id")],
    "tariff_id": [(CDR, "tariff_id"), (Tariff, "tariff_id")],
    "matched_prefix": [(CDR, "matched_prefix"), (Rate, "prefix")],
    "destination": [(CDR, "destination"), (Rate, "destination")],
    "rate_per_minute": [(CDR, "rate_per_minute"), (Rate, "rate_per_minute")],
    "connection_fee": [(CDR, "connection_fee"), (Rate, "connection_fee")],
    "increment_s": [(CDR, "increment_s"), (Rate, "increment_s")],
    "minimal_time_s": [(CDR, "minimal_time_s"), (Rate, "minimal_time_s")],
    "grace_time_s": [(CDR, "grace_time_s"), (Rate, "grace_time_s")],
    "price": [(CDR, "price")],
    "currency": [(CDR, "currency"), (Tariff, "currency")],
    "auth_method": [(CDR, "auth_method"), (LEG, "auth_method")],
    "final_state": [(CDR, "final_state"), (LEG, "final_state")],
    "rated_at": [(CDR, "rated_at")],
}
#: columns computed by the sink's row decoder (rating_stream.cdr.cdr_row): column -> (source field
#: of RatedCdr, how the column value follows from the source's largest value)
DERIVED: dict[str, tuple[str, Any]] = {
    "start_ms": ("started_at", lambda _top: 999),  # milliseconds within a second
    "answer_ms": ("answered_at", lambda _top: 999),
    "end_ms": ("ended_at", lambda _top: 999),
    "rated_ms": ("rated_at", lambda _top: 999),
    "duration": ("duration_ms", lambda top: -(-top // 1000)),  # seconds, a started one counted
    "billsec": ("billsec_ms", lambda top: -(-top // 1000)),
}
#: columns the sink does not write
DEFAULTED = {"inserted_at"}


def test_every_column_is_accounted_for():
    columns = set(cdr_columns())
    mapped = set(DIRECT) | set(DERIVED) | DEFAULTED
    assert columns == mapped, f"unmapped: {columns - mapped}, gone: {mapped - columns}"
    from rating_stream.cdr import CDR_COLUMNS

    assert set(CDR_COLUMNS) == columns - DEFAULTED


def test_leg_columns_are_the_ones_a_finished_leg_fills():
    """``LEG_COLUMNS`` (the rating bench's unrated table) is exactly what ``FinishedLeg`` fills."""
    from rating_stream.cdr import LEG_COLUMNS

    from_leg = {column for column, sources in DIRECT.items() if any(m is LEG for m, _field in sources)}
    leg_times = ("started_at", "answered_at", "ended_at")
    leg_ms = {column for column, (source, _derive) in DERIVED.items() if source in leg_times}
    assert set(LEG_COLUMNS) == from_leg | leg_ms


# --- valid base records, to vary one field at a time ----------------------------------------------

def _base(model: type[BaseModel]) -> dict[str, Any]:
    answered = T0 + timedelta(seconds=5)
    ended = T0 + timedelta(seconds=65)
    leg = FinishedLeg(
        source="t", leg_id="cb:a:0", callback_id="cb", leg="a", dst="34911234567", started_at=T0,
        answered_at=answered, ended_at=ended, disposition="ANSWERED", payer={"kind": "user", "id": "u"},
        q850_cause=16, sip_code=200,
    )
    if model is FinishedLeg:
        return json.loads(leg.model_dump_json())
    if model is Rate:
        return {"prefix": "34", "rate_per_minute": "0.1"}
    if model is Tariff:
        return {"tariff_id": "t", "rates": [{"prefix": "34", "rate_per_minute": "0.1"}]}
    cdr = RatedCdr(
        source="r", leg_id="cb:a:0", callback_id="cb", leg="a", attempt=0, version=1, dst="34911234567",
        started_at=T0, answered_at=answered, ended_at=ended, duration_ms=65_000, billsec_ms=60_000,
        billed_s=60, disposition="ANSWERED", q850_cause=16, sip_code=200, payer_kind="user", payer_id="u",
        tariff_id="t", matched_prefix="34", rate_per_minute="0.1", connection_fee="0", increment_s=1,
        minimal_time_s=0, grace_time_s=0, price="0.1", currency="USD", rated_at=ended,
    )
    return json.loads(cdr.model_dump_json())


def _with(model: type[BaseModel], field: str, value: Any) -> dict[str, Any]:
    record = _base(model)
    if field in _TIMES:  # move every time together, so only the bound can refuse it
        for name in _TIMES:
            if name in record:
                record[name] = value
    target = record
    *parents, leaf = field.split(".")
    for part in parents:
        target = target[part]
    target[leaf] = value
    return record


def _refused_at(model: type[BaseModel], field: str, value: Any) -> bool:
    """True when ``model`` refuses ``value`` in ``field`` *because of that field*."""
    try:
        model.model_validate(_with(model, field, value))
    except ValidationError as exc:
        path = tuple(field.split("."))
        return any(tuple(map(str, e["loc"]))[: len(path)] == path for e in exc.errors())
    return False


def _accepted(model: type[BaseModel], field: str, value: Any) -> bool:
    try:
        model.model_validate(_with(model, field, value))
    except ValidationError:
        return False
    return True


# --- what lies just outside each column type ------------------------------------------------------

def _inner(ch_type: str) -> tuple[str, bool]:
    m = re.fullmatch(r"Nullable\((.*)\)", ch_type)
    return (m.group(1), True) if m else (ch_type, False)


def _int_range(ch_type: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(U?)Int(8|16|32|64)", ch_type)
    if not m:
        return None
    bits = int(m.group(2))
    return (0, 2**bits - 1) if m.group(1) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _outside(ch_type: str) -> list[Any]:
    """Values a model field feeding a column of ``ch_type`` must refuse."""
    bounds = _int_range(ch_type)
    if bounds is not None:
        return [bounds[0] - 1, bounds[1] + 1]
    if ch_type == "DateTime":  # UInt32 seconds since the epoch
        return ["1969-12-31T23:59:59Z", "2106-02-07T06:28:16Z", "9999-12-31T23:59:59Z"]
    m = re.fullmatch(r"Decimal\((\d+), *(\d+)\)", ch_type)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        whole = precision - scale
        return [str(Decimal(10) ** whole), str(-(Decimal(10) ** whole)), str(Decimal(10) ** -(scale + 1)),
                "1e400", "99999999999999999999999999"]
    m = re.fullmatch(r"FixedString\((\d+)\)", ch_type)
    if m:
        n = int(m.group(1))
        return ["A" * (n + 1), "É" * n]  # more bytes than it holds (UTF-8)
    if ch_type.startswith("Enum8("):
        return ["no such element"]
    if ch_type == "String":
        return []
    raise AssertionError(f"no rule for column type {ch_type}: extend this test")


def _enum_of(model: type[BaseModel], field: str) -> type[enum.Enum] | None:
    *parents, leaf = field.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # a nested record (FinishedLeg.payer)
    annotation = model.model_fields[leaf].annotation
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, enum.Enum)), None)


def _cases() -> list[tuple[str, str, type[BaseModel], str]]:
    columns = cdr_columns()
    return [(column, columns[column], model, field) for column, sources in DIRECT.items()
            for model, field in sources]


@pytest.mark.parametrize(("column", "ch_type", "model", "field"), _cases(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_model_field_bound_fits_its_column(column, ch_type, model, field):
    inner, nullable = _inner(ch_type)
    for value in _outside(inner):
        assert _refused_at(model, field, value), (
            f"{model.__name__}.{field} accepts {value!r}, which {column} {ch_type} cannot store"
        )
    if not nullable and inner not in ("String",):
        # None reaches a non-Nullable column only as an insert error (Strings take '' instead)
        assert not _accepted(model, field, None), f"{model.__name__}.{field} accepts None for {column}"
    if inner.startswith("Enum8("):
        names = set(re.findall(r"'([^']*)'\s*=", inner))
        kind = _enum_of(model, field)
        assert kind is not None, f"{model.__name__}.{field} should be an enum for {column}"
        assert {e.value for e in kind} <= names, f"{kind.__name__} has values {column} does not know"


@pytest.mark.parametrize("column", sorted(DERIVED))
def test_derived_columns_fit_from_their_sources_largest_value(column):
    source, derive = DERIVED[column]
    ch_type, _nullable = _inner(cdr_columns()[column])
    low, high = _int_range(ch_type)
    spec = RatedCdr.model_json_schema()["properties"][source]
    if source in _TIMES:
        top = None
        assert _refused_at(RatedCdr, source, "2106-02-07T06:28:16Z")
    else:
        top = spec.get("maximum")
        assert top is not None, f"RatedCdr.{source} has no maximum, so {column} is unbounded"
    assert low <= 0 and derive(top) <= high, f"{column} {ch_type} cannot hold {derive(top)}"


def test_the_sample_extremes_of_each_model_are_accepted():
    """The probes above are only meaningful if the base records are valid and the models accept
    the largest values the columns do hold."""
    for model in (FinishedLeg, RatedCdr, Rate, Tariff):
        model.model_validate(_base(model))
    assert _accepted(RatedCdr, "q850_cause", 127) and _accepted(RatedCdr, "version", 2**64 - 1)
    assert _accepted(RatedCdr, "price", "9999999999.99999999")
    assert _accepted(FinishedLeg, "started_at", "2106-02-07T06:28:15Z")
    assert _accepted(FinishedLeg, "started_at", "1970-01-01T00:00:00Z")
