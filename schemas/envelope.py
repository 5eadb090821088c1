"""The common envelope every stream record carries, the dead-letter record, and the wire shapes of
money and times.

Every record value is one flat JSON object: the envelope fields (``event_id``, ``type``,
``schema_version``, ``time``, ``source``) sit beside the payload fields, so a consumer in any
language reads one object and ClickHouse can ingest it without unnesting. Dead letters carry the
envelope without ``schema_version``; reference records (``config.*``) have none
(docs/contracts/README.md).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

#: Highest schema version this code understands; a record with a newer one is dead-lettered, not guessed at.
SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Shapes of the values that travel as JSON strings: a time, an amount of money. The published
#: JSON Schema gives each one a ``pattern`` (``format`` alone is not checked by most validators),
#: and the models check the same pattern on JSON input before parsing the value, so a string is
#: valid for the schema exactly when it is valid for the model (docs/contracts/README.md). Every
#: check runs inside pydantic-core: no Python call per field, which matters on the rater's hot path.
_TIME_OF_DAY = r"[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])"
_NEGATIVE_OFFSET = r"(?:[Zz]|[+-]00:?00|-(?:[01][0-9]|2[0-3]):?[0-5][0-9])"
#: month and day of a year that is not a leap year
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001..9999
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"


def _alternatives(*parts: str) -> str:
    return "^(?:" + "|".join(parts) + ")$"


#: RFC 3339 with seconds, at most 6 fraction digits and an explicit offset (``Z`` or ``+hh:mm``);
#: also what RFC 3339 and ISO 8601 let writers vary, and every reader of ours reads alike: ``t`` or
#: a space for ``T``, ``z`` for ``Z``, ``+hhmm`` for ``+hh:mm``.
TIME_PATTERN = _alternatives(
    f"{_YEAR}-{_MONTH_DAY}{_TIME_OF_DAY}{_OFFSET}", f"{_LEAP_YEAR}-02-29{_TIME_OF_DAY}{_OFFSET}"
)
#: Times a CDR stores: ClickHouse ``DateTime`` is UInt32 seconds since the epoch, so
#: 1970-01-01T00:00:00Z .. 2106-02-07T06:28:15Z (a time with milliseconds after that last second
#: would round into a 2**32-th second it cannot hold).
CDR_TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
CDR_TIME_MAX = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)
_CDR_LEAP_YEARS = "|".join(str(y) for y in range(1972, 2106, 4) if y != 2100)
#: What the wire takes of that range: whole days, so the pattern stays readable; every offset may
#: be used except where it would cross an end (1970-01-01 only at UTC or west of it, and 2106 up
#: to 02-05 only), so no string that matches lies outside [CDR_TIME_MIN, CDR_TIME_MAX].
CDR_TIME_PATTERN = _alternatives(
    rf"(?:197[1-9]|19[89][0-9]|20[0-9][0-9]|210[0-5])-{_MONTH_DAY}{_TIME_OF_DAY}{_OFFSET}",
    rf"(?:{_CDR_LEAP_YEARS})-02-29{_TIME_OF_DAY}{_OFFSET}",
    rf"1970-(?:01-(?:0[2-9]|[12][0-9]|3[01])|(?:0[3578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8])){_TIME_OF_DAY}{_OFFSET}",
    rf"1970-01-01{_TIME_OF_DAY}{_NEGATIVE_OFFSET}",
    rf"2106-(?:01-(?:0[1-9]|[12][0-9]|3[01])|02-0[1-5]){_TIME_OF_DAY}{_OFFSET}",
)
#: The longest span between two such times, in milliseconds (``duration_ms`` / ``billsec_ms``).
CDR_SPAN_MAX_MS = (2**32 - 1) * 1000

#: Money as the CDR table stores it: ClickHouse ``Decimal(18, 8)``, at most 10 digits before the
#: point and 8 after. Every amount (a rate, a fee, a price, a balance, a credit limit, a balance
#: change) is held to it wherever it enters (a carrier file, a reference record, a CDR), so what
#: is accepted can be priced, charged and stored as it is: neither a rate of ``1e400`` that no
#: rounding context can quantize, nor a balance of ``1e30`` that no column holds.
MONEY_PRECISION = 18
MONEY_SCALE = 8
MONEY_MAX = Decimal("9999999999.99999999")


class WireString:
    """A value that is a JSON string of one shape on the wire (``pattern``) and a Python object in
    the model (``value_schema``: a datetime, a Decimal, with their bounds).

    JSON input must be a string matching the pattern, then it is parsed and bounded; Python input
    (code, a carrier's YAML file) is parsed as before. The JSON Schema is the string and its pattern."""

    def __init__(
        self,
        pattern: str,
        value_schema: cs.CoreSchema,
        description: str,
        serialization: cs.SerSchema | None = None,
    ) -> None:
        self.pattern = pattern
        self.value_schema = value_schema
        self.description = description
        self.serialization = serialization

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> cs.CoreSchema:
        return cs.json_or_python_schema(
            json_schema=cs.chain_schema(
                [
                    cs.custom_error_schema(
                        cs.str_schema(pattern=self.pattern, strict=True),
                        custom_error_type="wire_format",
                        custom_error_message=f"expected {self.description}",
                    ),
                    self.value_schema,
                ]
            ),
            python_schema=self.value_schema,
            serialization=self.serialization,
        )

    def __get_pydantic_json_schema__(
        self, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # no ``format: date-time``: a validator that checks it would refuse ``+hhmm``, which the pattern
        # and the models take
        return {"type": "string", "pattern": self.pattern, "description": self.description}


#: Every time on the wire carries its UTC offset (producers write ``Z``); a time without one is
#: refused rather than guessed at, and so is anything but RFC 3339 (no epoch numbers, no spaces).
UtcDatetime = Annotated[
    datetime,
    WireString(
        TIME_PATTERN,
        cs.datetime_schema(tz_constraint="aware"),
        "RFC 3339 time with seconds and an offset, e.g. \"2026-01-31T12:00:00.250Z\"",
    ),
]

#: A time that reaches a ``callback.cdr`` column (start, answer, end, rated): aware, and within
#: what ``DateTime`` stores.
CdrTime = Annotated[
    datetime,
    WireString(
        CDR_TIME_PATTERN,
        cs.datetime_schema(tz_constraint="aware", ge=CDR_TIME_MIN, le=CDR_TIME_MAX),
        "RFC 3339 time as UtcDatetime, from 1970-01-01 (at UTC or west of it) to 2106-02-05: "
        "what ClickHouse DateTime stores",
    ),
]


def _money_pattern(signed: bool, integer_digits: int, maximum: Decimal) -> str:
    """At most ``integer_digits`` digits before the point (bounded by ``maximum``) and 8 significant
    ones after it; trailing zeros do not count ("0.10000000000" is 0.1)."""
    below = rf"[0-9]{{1,{integer_digits}}}(?:\.[0-9]{{1,{MONEY_SCALE}}}0*)?"
    exact = "" if maximum == MONEY_MAX else rf"|{int(maximum)}(?:\.0+)?"
    return rf"^{'-?' if signed else ''}(?:{below}{exact})$"


def money_text(amount: Decimal) -> str:
    """An amount as money is written on the wire: plain notation, never an exponent ("0.00000012",
    "100", "0.00000000"); what ``format(amount, "f")`` writes, in a third of its time (``str`` is
    plain unless the exponent is positive or the number very small), on the rater's hot path three
    times per leg."""
    text = str(amount)
    return text if "E" not in text else format(amount, "f")


def money(*, signed: bool, maximum: Decimal = MONEY_MAX) -> Any:
    """Money as a type: Decimal end to end; on the wire a JSON string ("0.20") so no consumer parses
    it as float. Bounded to Decimal(18, 8), and to [0, ``maximum``] unless ``signed``;
    ``maximum`` is MONEY_MAX or a power of ten."""
    digits = len(str(int(maximum))) - (0 if maximum == MONEY_MAX else 1)
    bound = "" if maximum == MONEY_MAX else f", at most {int(maximum)}"
    return Annotated[
        Decimal,
        WireString(
            _money_pattern(signed, digits, maximum),
            cs.decimal_schema(
                ge=-maximum if signed else Decimal(0),
                le=maximum,
                max_digits=MONEY_PRECISION,
                decimal_places=MONEY_SCALE,
                allow_inf_nan=False,
            ),
            f"decimal amount as a string{'' if signed else ', not negative'}{bound}; at most "
            f"{digits} digits before the point and 8 significant ones after it (ClickHouse "
            'Decimal(18, 8)), e.g. "0.20"',
            cs.plain_serializer_function_ser_schema(money_text, when_used="json"),
        ),
    ]


#: A signed amount (a balance, a balance change) and one that is never negative (a price, a limit).
Money = money(signed=True)
NonNegativeMoney = money(signed=False)

#: Digits-only E.164-style number (no '+', spaces or dashes); PBXes and tariffs agree on it.
PhoneNumber = Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]


def every_object(node: Any) -> list[dict[str, Any]]:
    """Every dict in a tree of dicts and lists (a core schema, a JSON Schema), outermost first;
    a list, so the caller may change them as it goes."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def _strict_scalars(schema: cs.CoreSchema) -> None:
    """Make every integer and boolean of a core schema strict: a JSON ``"3"``, ``true`` or ``3.0``
    is not an integer and ``1`` or ``"true"`` is not a boolean, as the published JSON Schema says."""
    for node in every_object(schema):
        if node.get("type") in ("int", "bool"):
            node["strict"] = True


class Record(BaseModel):
    """Base of every message: strict about unknown fields so contract drift is caught, not swallowed,
    and about JSON types (no "3" for 3, no 1 for true), so a record is valid for the model exactly
    when it is valid for its published JSON Schema (docs/contracts/README.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> cs.CoreSchema:
        schema = handler(source)
        _strict_scalars(schema)
        return schema


#: The envelope: on the wire every record that has one of these fields must carry it (a record built
#: in code gets a fresh id, its type, the version of this code and the current time by default).
ENVELOPE_FIELDS = ("event_id", "type", "schema_version", "time", "source")


class Stamped(Record):
    """A record with (some of) the envelope fields: JSON input must carry every one it has."""

    ON_THE_WIRE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _envelope_on_the_wire(self, info: ValidationInfo) -> Stamped:
        # one set comparison per record, and only for JSON input: the defaults serve code, not writers
        if info.mode == "json" and not self.ON_THE_WIRE <= self.model_fields_set:
            missing = ", ".join(sorted(self.ON_THE_WIRE - self.model_fields_set))
            raise ValueError(f"the envelope fields are required on the wire; missing: {missing}")
        return self

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.ON_THE_WIRE = frozenset(ENVELOPE_FIELDS) & set(cls.model_fields)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


#: the longest ``event_id`` a record may carry
EVENT_ID_MAX = 128


def bounded_event_id(readable: str) -> str:
    """A deterministic ``event_id`` (``kind:part:part...``, the same every time the record is
    written: a charge's id, docs/architecture.md "Guarantees") as it is, or ``kind:`` and its
    SHA-256 when it is longer than an event id may be."""
    if len(readable) <= EVENT_ID_MAX:
        return readable
    return readable.split(":", 1)[0] + ":" + hashlib.sha256(readable.encode()).hexdigest()


class Envelope(Stamped):
    """Common header of every stream record. ``type`` is fixed per subclass (a Literal) and is the
    union discriminator."""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=EVENT_ID_MAX)
    #: a record newer than this code is refused (and dead-lettered as unknown_schema_version)
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    time: UtcDatetime = Field(default_factory=utc_now)
    source: str = Field(min_length=1, max_length=128, description="Which process wrote it, e.g. 'ami/pbx1'")


class DeadLetter(Stamped):
    """A record that could not be processed, with why and the original bytes (base64) so nothing is lost.

    It has no ``schema_version``: its shape is that of this class, whatever the version of the record
    it carries (docs/contracts/README.md)."""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: Literal["dead_letter"] = "dead_letter"
    time: UtcDatetime = Field(default_factory=utc_now)
    source: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    key_b64: str | None = None
    value_b64: str | None = None
    reason: str
    error_kind: str = Field(
        description="stable machine-readable class: malformed_json, invalid_schema, "
        "unknown_schema_version, no_tariff, no_prefix, unpriceable, refused_by_clickhouse, ..."
    )
    details: dict[str, Any] = Field(default_factory=dict)


def required_when(field: str, value: str, names: tuple[str, ...], *, absent_means_it: bool = False) -> dict:
    """A JSON Schema rule for a model validator: when ``field`` is ``value`` (or absent, if that is
    its default), every one of ``names`` must be present and not null."""
    condition: dict[str, Any] = {"properties": {field: {"const": value}}}
    if not absent_means_it:
        condition["required"] = [field]
    return {
        "if": condition,
        "then": {"required": list(names), "properties": {name: {"not": {"type": "null"}} for name in names}},
    }


def invalid_record(exc: ValidationError) -> tuple[str, str]:
    """(dead-letter ``error_kind``, reason) for a record that failed validation: not JSON at all
    (``malformed_json``), from a newer version of this code (``unknown_schema_version``), or not
    the contract (``invalid_schema``, with the first field that is wrong)."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"type": "", "msg": str(exc), "loc": ()}
    if first["type"] == "json_invalid":
        kind = "malformed_json"
    elif any("schema_version" in map(str, e.get("loc", ())) for e in errors):
        kind = "unknown_schema_version"
    else:
        kind = "invalid_schema"
    where = ".".join(str(p) for p in first.get("loc", ()))
    return kind, f"{where}: {first['msg']}" if where else first["msg"]
