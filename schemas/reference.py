"""Reference data a carrier configures: callback settings, users, devices, calling cards, tariffs,
DIDs (access numbers), callback dial plans and callback servers.

These are the values of the compacted ``config.*`` topics, keyed by their natural id (see
``schemas.topics``). Users and calling cards are unrelated entities, as in the seed.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from schemas.envelope import Money, NonNegativeMoney, PhoneNumber, Record, money, required_when
from schemas.hangup_causes import BY_Q850

Digits = Annotated[str, Field(pattern=r"^[0-9]{1,32}$")]
Prefix = Annotated[str, Field(pattern=r"^[0-9]{0,20}$", description="'' is the catch-all prefix")]
EntityId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

log = logging.getLogger(__name__)


class AuthMethod(StrEnum):
    """How a Callback Dial Plan recognises who is calling (seed: 'Types of Callback')."""

    DEVICE_PIN = "device_pin"  # user enters a Device PIN
    ANI = "ani"  # caller ID matches a device's registered number; no PIN asked
    ANI_THEN_PIN = "ani_then_pin"  # caller ID must match, then the Device PIN is asked
    CARD_NUMBER_PIN = "card_number_pin"  # calling card number + PIN
    CARD_PIN = "card_pin"  # calling card PIN only
    CARD_PINLESS = "card_pinless"  # caller ID matches a card's pinless number


class CallerIdPolicy(StrEnum):
    """Which caller ID leg A presents (seed settings Send Device CID / Send Source as CID / Callback CID)."""

    DEVICE = "device"
    SOURCE = "source"
    CALLBACK_CID = "callback_cid"
    DEFAULT = "default"


#: the settings the ``system`` scope must set (the others inherit them)
_SYSTEM_REQUIRED = (
    "active_for_users",
    "max_retries",
    "retry_time_s",
    "wait_time_s",
    "callback_server_id",
    "send_device_cid",
    "send_source_as_cid",
    "callback_user_id",
    "callback_device_id",
    "pin_attempts",
    "initiation_ring_s",
)


class CallbackSettings(Record):
    """The seed's callback settings. Scope ``system`` must set every field; a ``did:<n>`` or
    ``dialplan:<id>`` scope overrides only the fields it sets (``None`` = inherit)."""

    model_config = ConfigDict(
        json_schema_extra=required_when("scope", "system", _SYSTEM_REQUIRED, absent_means_it=True)
    )

    scope: Annotated[str, Field(pattern=r"^(system|did:[0-9]{1,20}|dialplan:[A-Za-z0-9_.:-]{1,64})$")] = (
        "system"
    )
    active_for_users: bool | None = None
    max_retries: Annotated[int, Field(ge=0, le=20)] | None = None
    retry_time_s: Annotated[int, Field(ge=1, le=3600)] | None = None
    wait_time_s: Annotated[int, Field(ge=5, le=300)] | None = None
    callback_server_id: EntityId | None = None
    busy_ivr: str | None = Field(default=None, description="IVR played to leg A when leg B is busy")
    failed_ivr: str | None = Field(default=None, description="IVR played to leg A when leg B is unreachable")
    send_device_cid: bool | None = None
    send_source_as_cid: bool | None = None
    web_callback_cid: PhoneNumber | None = Field(
        default=None, description="CID for web callbacks when Send Source as CID is on; empty = default CID"
    )
    callback_cid: PhoneNumber | None = Field(default=None, description="'send another CallerID'")
    default_cid: PhoneNumber | None = Field(default=None, description="CID when no policy yields one")
    callback_user_id: EntityId | None = Field(default=None, description="pays unauthenticated leg A")
    callback_device_id: EntityId | None = None
    pin_attempts: Annotated[int, Field(ge=1, le=10)] | None = None
    initiation_ring_s: Annotated[int, Field(ge=0, le=60)] | None = Field(
        default=None, description="seconds the initiation call rings before it is dropped"
    )
    # --- fraud guards (the seed: caller ID is easy to fake, and unauthenticated leg A costs the
    # owner money). Unset at every scope = the safe defaults of processors.guard.GuardLimits.
    max_initiations_per_ani_per_minute: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        default=None, description="initiations accepted from one caller ID per minute; 0 = no limit"
    )
    max_initiations_per_did_per_minute: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        default=None, description="initiations accepted on one access number per minute; 0 = no limit"
    )
    one_live_session_per_ani: bool | None = Field(
        default=None, description="refuse an initiation while a callback to the same number is under way"
    )
    blocked_origin_prefixes: list[Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]] | None = Field(
        default=None,
        description="origins (caller ID prefixes) never called back, whatever the Callback Tariff says",
    )

    @model_validator(mode="after")
    def _system_is_complete(self) -> CallbackSettings:
        if self.scope == "system":
            missing = [name for name in _SYSTEM_REQUIRED if getattr(self, name) is None]
            if missing:
                raise ValueError(f"system callback settings must set: {', '.join(missing)}")
        return self

    def overlay(self, override: CallbackSettings | None) -> CallbackSettings:
        """These settings with every field the override sets replacing ours (scope stays ours)."""
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump(exclude={"scope"}).items() if v is not None}
        return self.model_copy(update=changes)


class User(Record):
    """A subscriber. Web credentials are not here but on ``auth.web_credentials``, which only the web
    API reads (``schemas.credentials``); a record of an older version that still carries them is read
    without them (``LEGACY_CREDENTIAL_FIELDS``)."""

    user_id: EntityId
    name: str = Field(min_length=1, max_length=200)
    tariff_id: EntityId
    currency: Currency = "USD"
    prepaid: bool = True
    #: opening balance; like every amount, within Decimal(18, 8) (schemas.envelope.Money)
    balance: Money = Decimal("0")
    credit_limit: NonNegativeMoney = Field(
        default=Decimal("0"), description="postpaid: how far below 0 it may go"
    )
    callback_enabled: bool = True
    blocked: bool = False

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_credentials(cls, data: object) -> object:
        """Leave out the web credentials an older ``config.users`` record carries, so they go no
        further than this read (docs/architecture.md, "Credentials"). A subclass that declares
        them (the carrier file's user entry) keeps them."""
        if not isinstance(data, dict):
            return data
        legacy = [f for f in LEGACY_CREDENTIAL_FIELDS if f in data and f not in cls.model_fields]
        if not legacy:
            return data
        _warn_legacy_credentials(data.get("user_id"), legacy)
        return {k: v for k, v in data.items() if k not in legacy}


#: fields ``config.users`` records carried before the web credentials moved to
#: ``auth.web_credentials``; ``User`` reads such a record without them
LEGACY_CREDENTIAL_FIELDS = ("web_username", "web_password_hash", "api_key_sha256")
#: one warning per process: every process reads every user at start, so a line per record would
#: repeat thousands of times until the carrier loads its file again
_legacy_warned: list[bool] = [False]


def _warn_legacy_credentials(user_id: object, fields: list[str]) -> None:
    level = logging.DEBUG if _legacy_warned[0] else logging.WARNING
    _legacy_warned[0] = True
    log.log(
        level,
        "config.users record of user %r carries %s (written by an older version): ignored, the web "
        "API reads credentials from auth.web_credentials only; run `callback config load` again to "
        "republish the users without them (further such records are logged at debug level)",
        user_id,
        ", ".join(fields),
    )


class Device(Record):
    device_id: EntityId
    user_id: EntityId
    name: str = ""
    pin: Annotated[str, Field(pattern=r"^[0-9]{4,12}$")] | None = None
    caller_id: PhoneNumber | None = Field(default=None, description="the Device CID (Send Device CID)")
    registered_numbers: list[PhoneNumber] = Field(
        default_factory=list, description="ANI numbers that identify this device (Callback with ANI)"
    )


class CallingCard(Record):
    number: Annotated[str, Field(pattern=r"^[0-9]{4,20}$")]
    pin: Annotated[str, Field(pattern=r"^[0-9]{4,12}$")]
    tariff_id: EntityId
    currency: Currency = "USD"
    #: opening balance; like every amount, within Decimal(18, 8) (schemas.envelope.Money)
    balance: Money = Decimal("0")
    active: bool = True
    pinless_numbers: list[PhoneNumber] = Field(default_factory=list, description="ANIs for pinless use")


#: The longest a leg may be billed: 7 days (604,800 s, a whole number of minutes and hours). The
#: rater refuses to price a leg billed for longer (``unpriceable``: it goes to review), and the
#: processors' leg-B limit never exceeds it (``rating_stream.engine.max_duration_s``).
MAX_BILLED_S = 7 * 24 * 3600
#: Highest rate per minute and connection fee a tariff may set. Chosen so that the most a single
#: leg can cost, ``RATE_MAX * MAX_BILLED_S / 60 + CONNECTION_FEE_MAX`` = 1,008,100,000, fits
#: the CDR's ``Decimal(18, 8)`` price (``schemas.envelope.MONEY_MAX``, 9,999,999,999.99999999)
#: with room for nine such charges in one balance; far above any real tariff (dollars a minute).
RATE_MAX = Decimal(100_000)
CONNECTION_FEE_MAX = Decimal(100_000)
#: A tariff's rate per minute and connection fee: money from 0 to those maxima
RatePerMinute = money(signed=False, maximum=RATE_MAX)
ConnectionFee = money(signed=False, maximum=CONNECTION_FEE_MAX)


class Rate(Record):
    """One destination prefix of a tariff, with the seed's and MOR's billing parameters."""

    prefix: Prefix
    destination: str = ""
    #: at most 8 decimal places: what the CDR store keeps (Decimal(18, 8)) without rounding it; at
    #: most RATE_MAX / CONNECTION_FEE_MAX, so the longest billable leg's price still fits it
    rate_per_minute: RatePerMinute = Field(description="per minute, 0 to 100000, at most 8 decimal places")
    connection_fee: ConnectionFee = Field(
        default=Decimal("0"),
        description="charged once per billed leg, 0 to 100000, at most 8 decimal places",
    )
    increment_s: Annotated[int, Field(ge=1, le=3600)] = 1
    minimal_time_s: Annotated[int, Field(ge=0, le=3600)] = 0
    grace_time_s: Annotated[int, Field(ge=0, le=3600)] = 0


_PREFIX_TWICE = "a prefix appears twice"


class Tariff(Record):
    """A tariff's rates; that no prefix appears twice is a rule JSON Schema cannot state (``x-rules``)."""

    model_config = ConfigDict(json_schema_extra={"x-rules": [_PREFIX_TWICE]})

    tariff_id: EntityId
    name: str = ""
    currency: Currency = "USD"
    precision: Annotated[int, Field(ge=0, le=8)] = Field(default=4, description="decimal places of a price")
    rates: list[Rate] = Field(min_length=1)

    @field_validator("rates")
    @classmethod
    def _unique_prefixes(cls, rates: list[Rate]) -> list[Rate]:
        seen: set[str] = set()
        for rate in rates:
            if rate.prefix in seen:
                raise ValueError(f"{_PREFIX_TWICE}: {rate.prefix!r}")
            seen.add(rate.prefix)
        return rates


class CallbackDialPlan(Record):
    dialplan_id: EntityId
    name: str = ""
    auth_method: AuthMethod
    hangup_cause: int = Field(
        description="Q.850 cause the initiation call is dropped with (seed's 15)",
        json_schema_extra={"enum": sorted(BY_Q850)},
    )
    settings: CallbackSettings | None = Field(default=None, description="overrides of the system settings")

    @field_validator("hangup_cause")
    @classmethod
    def _seed_cause(cls, v: int) -> int:
        if v not in BY_Q850:
            raise ValueError(f"hangup cause {v} is not one of the supported {sorted(BY_Q850)}")
        return v


class Did(Record):
    """An access number. With a dial plan it is a callback DID: calls to it are initiations."""

    number: PhoneNumber
    dialplan_id: EntityId
    pbx_id: EntityId | None = Field(default=None, description="PBX the DID terminates on, if pinned")
    description: str = ""
    settings: CallbackSettings | None = None


_DROPPED = {
    "deprecated": True,
    "description": "accepted from records written before, and dropped: never written",
}


class CallbackServer(Record):
    """A PBX reachable over AMI through which callback calls go (seed: Callback Server).

    No AMI secret: ``config.servers`` is read by every process and kept for good, so the secret
    lives in the settings of the processes that log in (``ami.secrets.<server_id>``). An
    ``ami_secret`` in the input (a record published before, an older carrier file) is dropped."""

    model_config = ConfigDict(
        json_schema_extra=lambda schema: schema["properties"].update(ami_secret=_DROPPED)
    )

    server_id: EntityId
    name: str = ""
    ami_host: str
    ami_port: Annotated[int, Field(ge=1, le=65535)] = 5038
    ami_username: str
    originate_channel: str = Field(
        default="Local/{number}@callback-out", description="dial string template; {number} is replaced"
    )
    originate_context: str = "callback-a"
    originate_exten: str = "s"
    dial_b_context: str = "callback-dial-b"
    pin_context: str = "callback-pin"
    destination_context: str = "callback-destination"
    card_number_context: str = "callback-card-number"
    busy_ivr_context: str = "callback-busy-ivr"
    failed_ivr_context: str = "callback-failed-ivr"
    inbound_context: str = "from-trunk"
    kind: Literal["asterisk"] = "asterisk"

    @model_validator(mode="before")
    @classmethod
    def _drop_secret(cls, data: object) -> object:
        if isinstance(data, dict) and "ami_secret" in data:
            return {k: v for k, v in data.items() if k != "ami_secret"}
        return data
