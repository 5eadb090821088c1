"""The common envelope every message on every topic carries, and the dead-letter record.

Every record value is one flat JSON object: the envelope fields (``event_id``, ``type``,
``schema_version``, ``time``, ``source``) sit beside the payload fields, so a consumer in any
language reads one object and ClickHouse can ingest it without unnesting.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

#: Highest schema version this code understands; a record with a newer one is dead-lettered, not guessed at.
SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Every time on the wire carries its UTC offset (producers write ``Z``); a time without one is
#: refused rather than guessed at. Checked inside pydantic-core: no Python call per field, which
#: matters on the rater's hot path (four times per leg).
UtcDatetime = AwareDatetime


#: Times a CDR stores: ClickHouse ``DateTime`` is UInt32 seconds since the epoch, so
#: 1970-01-01T00:00:00Z .. 2106-02-07T06:28:15Z (a time with milliseconds after that last second
#: would round into a 2**32-th second it cannot hold).
CDR_TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
CDR_TIME_MAX = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)
#: The longest span between two such times, in milliseconds (``duration_ms`` / ``billsec_ms``).
CDR_SPAN_MAX_MS = (2**32 - 1) * 1000

#: A time that reaches a ``callback.cdr`` column (start, answer, end, rated): aware, and within
#: what ``DateTime`` stores. Both checks run inside pydantic-core (no Python call per field).
CdrTime = Annotated[AwareDatetime, Field(ge=CDR_TIME_MIN, le=CDR_TIME_MAX)]

#: Money as the CDR table stores it: ClickHouse ``Decimal(18, 8)``, at most 10 digits before the
#: point and 8 after. Every amount (a rate, a fee, a price, a balance, a credit limit, a balance
#: change) is held to it wherever it enters (a carrier file, a reference record, a CDR), so what
#: is accepted can be priced, charged and stored as it is: neither a rate of ``1e400`` that no
#: rounding context can quantize, nor a balance of ``1e30`` that no column holds.
MONEY_PRECISION = 18
MONEY_SCALE = 8
MONEY_MAX = Decimal("9999999999.99999999")


def _no_float_noise(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("money must be a finite number")
    return value


#: Money is Decimal end to end; on the wire it is a JSON string ("0.20") so no consumer parses it as
#: float. Bounded to Decimal(18, 8): |amount| <= ``MONEY_MAX``, at most 8 decimal places (trailing
#: zeros do not count: "0.10000000000" is 0.1). A field may narrow it further (``Field(ge=0)``).
Money = Annotated[
    Decimal,
    AfterValidator(_no_float_noise),
    Field(max_digits=MONEY_PRECISION, decimal_places=MONEY_SCALE),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?[0-9]{1,10}(\.[0-9]+)?$",
            "description": "decimal amount as a string; at most 10 digits before the point and 8 "
            "significant ones after it (ClickHouse Decimal(18, 8)), e.g. \"0.20\"",
        },
        mode="serialization",
    ),
]

#: Digits-only E.164-style number (no '+', spaces or dashes); PBXes and tariffs agree on it.
PhoneNumber = Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]


class Record(BaseModel):
    """Base of every message: strict about unknown fields so contract drift is caught, not swallowed."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Envelope(Record):
    """Common header fields. ``type`` is fixed per subclass (a Literal) and is the union discriminator."""

    TYPE: ClassVar[str] = ""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    #: a record newer than this code is refused (and dead-lettered as unknown_schema_version)
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    time: UtcDatetime = Field(default_factory=utc_now)
    source: str = Field(min_length=1, max_length=128, description="Which process wrote it, e.g. 'ami/pbx1'")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class DeadLetter(Record):
    """A record that could not be processed, with why and the original bytes (base64) so nothing is lost."""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str = "dead_letter"
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

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


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
