"""The rater's hot path on the wire: a finished leg decoded once, a rated CDR encoded once.

``FinishedLeg`` and ``RatedCdr`` (pydantic, ``schemas/``) are the contracts. Validating a leg with
pydantic costs more than rating it, so the rater decodes with ``decode_leg`` first: msgspec, into a
plain struct with the same fields, types and bounds as the model, its bounds read from the model
itself (docs/rating.md, "Speed"). The rule that keeps one authority:

    the fast decoder accepts a subset of what the model accepts, and for what it accepts it yields
    the same values; anything it refuses (a time written another way, a check it does not make)
    goes to the model, which accepts it or names the reason.

So a record is never refused by the fast path alone, and never accepted where the model would
refuse it. ``tests/unit/test_rating_wire.py`` holds the decoder to the model on generated and
hand-written records; ``tests/unit/test_rating_golden.py`` holds the whole output to what the rater
wrote before this module existed, byte for byte.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel

from schemas.callback import (
    Disposition,
    FinishedLeg,
    LegType,
    Payer,
    PayerKind,
    SessionState,
    answered_ms,
    ms_between,
)
from schemas.envelope import CDR_TIME_MAX, CDR_TIME_MIN, Envelope
from schemas.reference import AuthMethod


def _field_constraint(model: type[BaseModel], name: str, attr: str) -> Any:
    """The ``attr`` constraint (pattern, min_length, ge, ...) of a model's field, as pydantic has it."""
    info = model.model_fields[name]
    found = [getattr(m, attr) for m in info.metadata if getattr(m, attr, None) is not None]
    if not found:  # inside ``Annotated[...] | None``: look one level down
        for arg in getattr(info.annotation, "__args__", ()):
            for m in getattr(arg, "__metadata__", ()):
                for inner in getattr(m, "metadata", [m]):
                    if getattr(inner, attr, None) is not None:
                        found.append(getattr(inner, attr))
    if len(found) != 1:
        raise LookupError(f"{model.__name__}.{name} has {len(found)} {attr} constraints, expected 1")
    return found[0]


def _pattern(model: type[BaseModel], name: str) -> str:
    """A field's regular expression as Python's ``re`` must read it to agree with pydantic (whose
    ``$`` matches only at the very end; Python's also before a final newline)."""
    pattern = _field_constraint(model, name, "pattern")
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"{model.__name__}.{name}: pattern {pattern!r} is not anchored at both ends")
    return pattern[:-1] + r"\Z"


def _text(model: type[BaseModel], name: str) -> Any:
    return Annotated[
        str,
        msgspec.Meta(
            min_length=_field_constraint(model, name, "min_length"),
            max_length=_field_constraint(model, name, "max_length"),
        ),
    ]


def _int(model: type[BaseModel], name: str) -> Any:
    return Annotated[
        int, msgspec.Meta(ge=_field_constraint(model, name, "ge"), le=_field_constraint(model, name, "le"))
    ]


def _digits(model: type[BaseModel], name: str) -> Any:
    """A number of ASCII digits (``PhoneNumber``): its length bounded by msgspec, its digits
    checked by ``_checked``; refuses to build if the model's pattern ever says otherwise."""
    if _pattern(model, name) != r"^[0-9]{1,20}\Z":
        raise ValueError(f"{model.__name__}.{name} is no longer a plain number of 1 to 20 digits")
    return Annotated[str, msgspec.Meta(min_length=1, max_length=20)]


class _Pattern:
    """A field's pattern checked after decoding, remembering values seen to match (ids repeat from
    leg to leg): cheaper than a regular expression per field in msgspec."""

    def __init__(self, model: type[BaseModel], name: str) -> None:
        self._match = re.compile(_pattern(model, name)).match
        self._seen: dict[str, None] = {}

    def __call__(self, value: str | None) -> bool:
        if value is None or value in self._seen:
            return True
        if self._match(value) is None:
            return False
        if len(self._seen) >= 100_000:
            self._seen.clear()
        self._seen[value] = None
        return True


#: a time msgspec reads; it accepts a subset of what pydantic accepts, and reads it alike, except a
#: fraction of a second with more than six digits (msgspec rounds, pydantic truncates): see below
_TIME = Annotated[datetime, msgspec.Meta(tz=True)]
#: (a literal first character lets ``re`` skip through the record; msgspec refuses a comma)
_LONG_FRACTION = re.compile(rb"\.[0-9]{7}")


class PayerWire(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    kind: PayerKind
    id: str

    @property
    def key(self) -> str:
        """Key on ``accounts.balances`` (``Payer.key``)."""
        return f"{self.kind.value}:{self.id}"


class LegWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``FinishedLeg`` as the fast path decodes it: every field with its type and bounds; the
    patterns and the checks across fields follow in ``_checked``."""

    event_id: _text(Envelope, "event_id")  # type: ignore[valid-type]
    time: _TIME
    source: _text(Envelope, "source")  # type: ignore[valid-type]
    leg_id: _text(FinishedLeg, "leg_id")  # type: ignore[valid-type]
    callback_id: str
    leg: LegType
    dst: _digits(FinishedLeg, "dst")  # type: ignore[valid-type]
    started_at: _TIME
    ended_at: _TIME
    disposition: Disposition
    payer: PayerWire
    # required, as on the wire the model requires the envelope (docs/contracts/README.md)
    schema_version: _int(Envelope, "schema_version")  # type: ignore[valid-type]
    type: Literal["callback.leg"]
    attempt: _int(FinishedLeg, "attempt") = 0  # type: ignore[valid-type]
    pbx_id: str | None = None
    did: _digits(FinishedLeg, "did") | None = None  # type: ignore[valid-type]
    src: _digits(FinishedLeg, "src") | None = None  # type: ignore[valid-type]
    answered_at: _TIME | None = None
    q850_cause: _int(FinishedLeg, "q850_cause") | None = None  # type: ignore[valid-type]
    sip_code: _int(FinishedLeg, "sip_code") | None = None  # type: ignore[valid-type]
    auth_method: AuthMethod | None = None
    final_state: SessionState | None = None

    @property
    def duration_ms(self) -> int:
        return ms_between(self.started_at, self.ended_at)

    @property
    def billsec_ms(self) -> int:
        return answered_ms(self.answered_at, self.ended_at)


_decoder = msgspec.json.Decoder(LegWire)
_callback_id = _Pattern(FinishedLeg, "callback_id")
_pbx_id = _Pattern(FinishedLeg, "pbx_id")
_payer_id = _Pattern(Payer, "id")


def decode_leg(value: bytes) -> LegWire:
    """A ``callback.legs`` record decoded; ``FinishedLeg.model_validate_json`` decides (and raises
    its ``ValidationError``) whenever the fast path cannot vouch for the record itself."""
    leg = fast_leg(value)
    return leg if leg is not None else from_model(FinishedLeg.model_validate_json(value))


def fast_leg(value: bytes) -> LegWire | None:
    """The fast path alone: the leg, when msgspec reads it and it passes ``_checked``; None when
    the model must decide."""
    try:
        leg = _decoder.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if not _checked(leg) or _LONG_FRACTION.search(value) is not None:
        return None
    return leg


def _checked(w: LegWire) -> bool:
    """Whether the leg passes the checks the model makes beyond types and bounds: the patterns,
    ``FinishedLeg._times`` and the CDR's time bounds. False lets the model decide."""
    started, ended, answered = w.started_at, w.ended_at, w.answered_at
    if not (CDR_TIME_MIN <= started <= ended <= CDR_TIME_MAX):
        return False
    if started.year == 1970 or ended.year == 2106:  # the model's CdrTime pattern is narrower there
        return False
    if answered is None:
        if w.disposition is Disposition.ANSWERED:
            return False
    elif w.disposition is not Disposition.ANSWERED or not started <= answered <= ended:
        return False
    dst, src, did = w.dst, w.src, w.did
    return (
        dst.isascii()
        and dst.isdigit()
        and (src is None or (src.isascii() and src.isdigit()))
        and (did is None or (did.isascii() and did.isdigit()))
        and _callback_id(w.callback_id)
        and _pbx_id(w.pbx_id)
        and _payer_id(w.payer.id)
    )


def from_model(leg: FinishedLeg) -> LegWire:
    """A leg the model accepted, as rating reads it (the fast path's own type, field for field)."""
    fields = {name: getattr(leg, name) for name in LegWire.__struct_fields__}
    fields["payer"] = PayerWire(kind=leg.payer.kind, id=leg.payer.id)
    return LegWire(**fields)


class CdrWire(msgspec.Struct, gc=False):
    """``RatedCdr`` as the rater writes it, field for field in the order of the wire."""

    event_id: str
    schema_version: int
    time: datetime
    source: str
    type: str
    leg_id: str
    callback_id: str
    leg: LegType
    attempt: int
    version: int
    pbx_id: str | None
    did: str | None
    src: str | None
    dst: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    duration_ms: int
    billsec_ms: int
    billed_s: int
    disposition: Disposition
    q850_cause: int | None
    sip_code: int | None
    payer_kind: PayerKind
    payer_id: str
    tariff_id: str
    price: str
    currency: str
    auth_method: AuthMethod | None
    final_state: SessionState | None
    rated_at: datetime
    matched_prefix: str
    destination: str
    rate_per_minute: str
    connection_fee: str
    increment_s: int
    minimal_time_s: int
    grace_time_s: int


encode_cdr = msgspec.json.Encoder().encode


class LedgerWire(msgspec.Struct, gc=False):
    """``LedgerEntry`` as the rater writes it, field for field in the order of the wire."""

    event_id: str
    schema_version: int
    time: datetime
    source: str
    type: str
    payer_kind: PayerKind
    payer_id: str
    kind: str
    leg_id: str
    cdr_version: int
    amount: str
    balance: str
    currency: str
    sequence: int


encode_ledger = msgspec.json.Encoder().encode
