"""Builders shared by the unit tests of the pure processors layer (no servers, no Kafka).

``make_ref`` builds a small carrier in memory with ``ReferenceData.apply_model`` (one access number
per authentication method, users and cards in every interesting condition), ``sample_ref`` loads
``examples/carrier.yaml``. ``Call`` drives ``processors.session.step`` input by input and keeps
everything each step produced, so a test can assert on one step or on the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from callback.reference import ReferenceData
from callback.settings import SessionTimeouts
from processors.session import Input, Step, World, step
from processors.state import Session
from schemas.callback import CallbackInitiation, FinishedLeg, InitiationOrigin, LegType, SessionTransition
from schemas.carrier_config import CarrierConfig, load_carrier_config
from schemas.control import AdmissionVerdict, TimerTick
from schemas.pbx_commands import PbxCommandBase
from schemas.pbx_events import (
    ChannelHangup,
    CommandFailed,
    DialResult,
    DialStatus,
    IvrInput,
    IvrPrompt,
    OriginateOutcome,
    OriginateResult,
)
from schemas.reference import (
    AuthMethod,
    CallbackDialPlan,
    CallbackServer,
    CallbackSettings,
    CallingCard,
    Device,
    Did,
    Rate,
    Tariff,
    User,
)
from schemas.topics import (
    CONFIG_CARDS,
    CONFIG_DEVICES,
    CONFIG_DIALPLANS,
    CONFIG_DIDS,
    CONFIG_SERVERS,
    CONFIG_SETTINGS,
    CONFIG_TARIFFS,
    CONFIG_USERS,
)
from tests.factories import system_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


# --- the in-memory carrier ------------------------------------------------------------------------

OWNER = "owner"  # the Callback User
SERVER_ID = "pbx1"

#: one access number per dial plan (and authentication method)
DID_PIN = "2349000000001"  # device_pin, cause 17 (486)
DID_ANI = "2349000000002"  # ani, cause 21 (403)
DID_ANI_PIN = "2349000000003"  # ani_then_pin, cause 18 (408)
DID_CARD_NUMBER = "2349000000004"  # card_number_pin, cause 19 (480)
DID_CARD_PIN = "2349000000005"  # card_pin, cause 20 (480)
DID_PINLESS = "2349000000006"  # card_pinless, cause 22 (301)
DID_NO_PLAN = "2349000000099"  # names a dial plan that is not configured

CAUSES = {
    DID_PIN: (17, 486),
    DID_ANI: (21, 403),
    DID_ANI_PIN: (18, 408),
    DID_CARD_NUMBER: (19, 480),
    DID_CARD_PIN: (20, 480),
    DID_PINLESS: (22, 301),
}

ALICE_ANI = "2348031234567"  # alice-mobile's registered number (Nigeria Mobile, prefix 2348)
ALICE_PIN = "4821"
BOB_ANI = "2348000000002"  # bob is blocked
CAROL_ANI = "2348000000003"  # carol has callback_enabled = false
DAVE_ANI = "2348000000004"  # dave is postpaid
STRANGER_ANI = "2348099999999"  # no device, no card
PINLESS_ANI = "2348059998888"  # card 8800100202's pinless number
DEAD_CARD_ANI = "2348059990000"  # the inactive card's pinless number
INMARSAT_ANI = "870772000001"  # rated in the Callback Tariff, blocked by the default guard
UK_ANI = "447700900001"  # not in the Callback Tariff

CARD = "8800100200"  # active, pin 1111, balance 10.00
DEAD_CARD = "8800100209"  # inactive, pin 9999
PINLESS_CARD = "8800100202"  # active, pin 3333

SPAIN = "34911234567"  # retail: 0.08 / min, increment 1
UK = "442071234567"  # retail: 0.03 / min, increment 1
FREE = "80012345"  # retail: free

RETAIL_RATES = {
    "234": Rate(prefix="234", destination="Nigeria", rate_per_minute=Decimal("0.20"), increment_s=60),
    "2348": Rate(
        prefix="2348", destination="Nigeria Mobile", rate_per_minute=Decimal("0.22"), increment_s=60
    ),
    "34": Rate(prefix="34", destination="Spain", rate_per_minute=Decimal("0.08"), increment_s=1),
    "44": Rate(prefix="44", destination="United Kingdom", rate_per_minute=Decimal("0.03"), increment_s=1),
    "800": Rate(prefix="800", destination="Freephone", rate_per_minute=Decimal("0")),
}


def server(**changes: Any) -> CallbackServer:
    """The Callback Server, with context names unlike the defaults (so a test sees they are used)."""
    fields: dict[str, Any] = dict(
        server_id=SERVER_ID,
        ami_host="127.0.0.1",
        ami_username="cb",
        ami_secret="secret",
        originate_channel="PJSIP/{number}@trunk",
        originate_context="t-answered",
        originate_exten="go",
        dial_b_context="t-dial-b",
        pin_context="t-pin",
        destination_context="t-destination",
        card_number_context="t-card-number",
        busy_ivr_context="t-busy-ivr",
        failed_ivr_context="t-failed-ivr",
    )
    fields.update(changes)
    return CallbackServer(**fields)


def base_settings(**changes: Any) -> CallbackSettings:
    fields: dict[str, Any] = dict(
        callback_user_id=OWNER,
        callback_server_id=SERVER_ID,
        busy_ivr="busy-announcement",
        failed_ivr="failed-announcement",
        default_cid="18005550100",
        initiation_ring_s=0,
        max_retries=2,
        retry_time_s=20,
        wait_time_s=25,
        pin_attempts=3,
    )
    fields.update(changes)
    return system_settings(**fields)


def make_ref(settings: CallbackSettings | None = None, *, with_settings: bool = True) -> ReferenceData:
    """A small carrier: see the module constants for what is in it."""
    ref = ReferenceData()
    put = ref.apply_model
    if with_settings:
        put(CONFIG_SETTINGS.name, "system", settings if settings is not None else base_settings())
    put(CONFIG_SERVERS.name, SERVER_ID, server())
    put(
        CONFIG_TARIFFS.name,
        "origins",
        Tariff(
            tariff_id="origins",
            rates=[
                Rate(prefix="234", rate_per_minute=Decimal("0.20"), increment_s=60),
                Rate(prefix="1", rate_per_minute=Decimal("0.01"), increment_s=6),
                Rate(prefix="870", destination="Inmarsat", rate_per_minute=Decimal("7.00")),
            ],
        ),
    )
    put(CONFIG_TARIFFS.name, "retail", Tariff(tariff_id="retail", rates=list(RETAIL_RATES.values())))
    put(
        CONFIG_TARIFFS.name,
        "cards",
        Tariff(
            tariff_id="cards",
            rates=[
                Rate(prefix="234", rate_per_minute=Decimal("0.25"), increment_s=60),
                Rate(prefix="34", rate_per_minute=Decimal("0.10"), increment_s=1),
            ],
        ),
    )
    for user in (
        User(
            user_id=OWNER,
            name="Callback User",
            tariff_id="origins",
            prepaid=False,
            credit_limit=Decimal("1000000"),
        ),
        User(user_id="alice", name="Alice", tariff_id="retail", balance=Decimal("25.00")),
        User(user_id="bob", name="Bob", tariff_id="retail", balance=Decimal("5"), blocked=True),
        User(user_id="carol", name="Carol", tariff_id="retail", balance=Decimal("5"), callback_enabled=False),
        User(
            user_id="dave",
            name="Dave",
            tariff_id="retail",
            prepaid=False,
            balance=Decimal("0"),
            credit_limit=Decimal("10.00"),
        ),
        User(user_id="poor", name="Poor", tariff_id="retail", balance=Decimal("0.001")),
    ):
        put(CONFIG_USERS.name, user.user_id, user)
    for device in (
        Device(device_id="cb-virtual", user_id=OWNER),
        Device(
            device_id="alice-mobile",
            user_id="alice",
            pin=ALICE_PIN,
            caller_id="2348031230000",
            registered_numbers=[ALICE_ANI],
        ),
        Device(device_id="bob-home", user_id="bob", pin="7315", registered_numbers=[BOB_ANI]),
        Device(device_id="carol-home", user_id="carol", pin="5555", registered_numbers=[CAROL_ANI]),
        Device(device_id="dave-office", user_id="dave", pin="6666", registered_numbers=[DAVE_ANI]),
        Device(device_id="poor-phone", user_id="poor", pin="7777", registered_numbers=["2348000000007"]),
    ):
        put(CONFIG_DEVICES.name, device.device_id, device)
    for card in (
        CallingCard(number=CARD, pin="1111", tariff_id="cards", balance=Decimal("10.00")),
        CallingCard(
            number=DEAD_CARD,
            pin="9999",
            tariff_id="cards",
            balance=Decimal("10.00"),
            active=False,
            pinless_numbers=[DEAD_CARD_ANI],
        ),
        CallingCard(
            number=PINLESS_CARD,
            pin="3333",
            tariff_id="cards",
            balance=Decimal("5.00"),
            pinless_numbers=[PINLESS_ANI],
        ),
    ):
        put(CONFIG_CARDS.name, card.number, card)
    for plan_id, method, cause in (
        ("dp-pin", AuthMethod.DEVICE_PIN, 17),
        ("dp-ani", AuthMethod.ANI, 21),
        ("dp-ani-pin", AuthMethod.ANI_THEN_PIN, 18),
        ("dp-card-number", AuthMethod.CARD_NUMBER_PIN, 19),
        ("dp-card-pin", AuthMethod.CARD_PIN, 20),
        ("dp-pinless", AuthMethod.CARD_PINLESS, 22),
    ):
        put(
            CONFIG_DIALPLANS.name,
            plan_id,
            CallbackDialPlan(dialplan_id=plan_id, auth_method=method, hangup_cause=cause),
        )
    for number, plan_id in (
        (DID_PIN, "dp-pin"),
        (DID_ANI, "dp-ani"),
        (DID_ANI_PIN, "dp-ani-pin"),
        (DID_CARD_NUMBER, "dp-card-number"),
        (DID_CARD_PIN, "dp-card-pin"),
        (DID_PINLESS, "dp-pinless"),
        (DID_NO_PLAN, "dp-missing"),
    ):
        put(CONFIG_DIDS.name, number, Did(number=number, dialplan_id=plan_id, pbx_id=SERVER_ID))
    return ref


def put_settings(ref: ReferenceData, settings: CallbackSettings) -> None:
    """Add or replace a ``config.callback_settings`` record (system, ``did:`` or ``dialplan:`` scope)."""
    ref.apply_model(CONFIG_SETTINGS.name, settings.scope, settings)


def put_dialplan(
    ref: ReferenceData,
    plan_id: str,
    method: AuthMethod,
    cause: int = 17,
    settings: CallbackSettings | None = None,
) -> None:
    ref.apply_model(
        CONFIG_DIALPLANS.name,
        plan_id,
        CallbackDialPlan(dialplan_id=plan_id, auth_method=method, hangup_cause=cause, settings=settings),
    )


def put_did(ref: ReferenceData, number: str, plan_id: str, settings: CallbackSettings | None = None) -> None:
    ref.apply_model(CONFIG_DIDS.name, number, Did(number=number, dialplan_id=plan_id, settings=settings))


@lru_cache(maxsize=1)
def sample_carrier() -> CarrierConfig:
    return load_carrier_config(REPO_ROOT / "examples" / "carrier.yaml")


def sample_ref() -> ReferenceData:
    """The reference data of ``examples/carrier.yaml`` (a fresh copy: tests may change it)."""
    return ReferenceData.from_carrier_config(sample_carrier())


# --- an independent calculation of leg B's limit --------------------------------------------------


def _billed(seconds: int, rate: Rate) -> int:
    if rate.minimal_time_s > 0:
        seconds = max(seconds, rate.minimal_time_s)
    elif seconds <= rate.grace_time_s:
        return 0
    return -(-seconds // rate.increment_s) * rate.increment_s


def _cost(seconds: int, rate: Rate) -> Decimal:
    billed = _billed(seconds, rate)
    return Decimal(0) if billed == 0 else rate.connection_fee + rate.rate_per_minute * billed / 60


def longest_affordable(balance: Decimal, b: Rate, a: Rate, a_elapsed_s: int) -> int:
    """Largest T (whole increments of B) with cost_B(T) + cost_A(elapsed + T) <= balance, found by a
    plain search with the billing rules (minimal time, grace time, increment, connection fee) written
    out again here, so a test does not take ``rating_stream.engine.max_duration_s``'s word for it."""
    best, t = 0, b.increment_s
    while _cost(t, b) + _cost(a_elapsed_s + t, a) <= balance:
        best, t = t, t + b.increment_s
    return best


# --- inputs ---------------------------------------------------------------------------------------


def did_initiation(
    did: str = DID_PIN,
    ani: str | None = ALICE_ANI,
    *,
    callback_id: str = "cb1",
    received_at: datetime = T0,
    uniqueid: str = "init-1",
    channel: str = "PJSIP/carrier-00000001",
) -> CallbackInitiation:
    return CallbackInitiation(
        source="test",
        event_id=f"init:{callback_id}",
        callback_id=callback_id,
        origin=InitiationOrigin.DID,
        ani=ani,
        did=did,
        pbx_id=SERVER_ID,
        channel=channel,
        uniqueid=uniqueid,
        callback_number=ani,
        received_at=received_at,
    )


def web_initiation(
    user_id: str = "alice",
    number: str = ALICE_ANI,
    destination: str | None = None,
    *,
    callback_id: str = "web1",
    received_at: datetime = T0,
) -> CallbackInitiation:
    return CallbackInitiation(
        source="test",
        event_id=f"init:{callback_id}",
        callback_id=callback_id,
        origin=InitiationOrigin.WEB,
        user_id=user_id,
        callback_number=number,
        destination=destination,
        received_at=received_at,
    )


# --- the driver -----------------------------------------------------------------------------------


@dataclass
class Call:
    """One callback session driven input by input through ``step``."""

    ref: ReferenceData
    timeouts: SessionTimeouts = field(default_factory=SessionTimeouts)
    session: Session | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def world(self) -> World:
        return World(self.ref, self.timeouts, source="test-processors")

    @property
    def s(self) -> Session:
        assert self.session is not None
        return self.session

    @property
    def cb(self) -> str:
        return self.s.callback_id

    def feed(self, event: Input, now: datetime) -> Step:
        result = step(self.session, event, self.world, now)
        self.steps.append(result)
        self.session = None if result.delete else result.session
        return result

    # everything published so far
    @property
    def transitions(self) -> list[SessionTransition]:
        return [t for st in self.steps for t in st.transitions]

    @property
    def commands(self) -> list[PbxCommandBase]:
        return [c for st in self.steps for c in st.commands]

    @property
    def legs(self) -> list[FinishedLeg]:
        return [leg for st in self.steps for leg in st.legs]

    def states(self) -> list[str]:
        return [t.to_state.value for t in self.transitions]

    # --- inputs built from the session as it stands ---
    def tick(self, now: datetime | None = None) -> Step:
        """Fire the session's current timer (at its due time unless ``now`` is given)."""
        s = self.s
        assert s.due_at is not None and s.due_kind is not None, "the session waits for no timer"
        tick = TimerTick(
            source="timers",
            event_id=f"tick:{s.callback_id}:{s.timer_seq}",
            callback_id=s.callback_id,
            timer_seq=s.timer_seq,
            kind=s.due_kind,
            due_at=s.due_at,
        )
        return self.feed(tick, now if now is not None else s.due_at)

    def verdict(self, admitted: bool, now: datetime, reason: str = "") -> Step:
        return self.feed(
            AdmissionVerdict(source="guard", callback_id=self.cb, admitted=admitted, reason=reason), now
        )

    def originate_result(
        self,
        outcome: OriginateOutcome,
        now: datetime,
        *,
        occurred_at: datetime | None = None,
        command_id: str | None = None,
        channel: str = "PJSIP/trunk-a1",
    ) -> Step:
        a = self.s.a
        assert a is not None
        reason_code = {
            OriginateOutcome.ANSWERED: 4,
            OriginateOutcome.BUSY: 5,
            OriginateOutcome.NO_ANSWER: 3,
            OriginateOutcome.CONGESTION: 8,
            OriginateOutcome.HANGUP: 1,
            OriginateOutcome.FAILED: 0,
        }[outcome]
        return self.feed(
            OriginateResult(
                source="ami",
                pbx_id=SERVER_ID,
                callback_id=self.cb,
                leg=LegType.A,
                attempt=a.attempt,
                occurred_at=occurred_at or now,
                reason_code=reason_code,
                outcome=outcome,
                command_id=command_id or a.command_id,
                channel=channel,
                uniqueid=a.uniqueid,
            ),
            now,
        )

    def answer(self, now: datetime, **kw: Any) -> Step:
        return self.originate_result(OriginateOutcome.ANSWERED, now, **kw)

    def keys(self, prompt: IvrPrompt, digits: str, now: datetime, *, uniqueid: str | None = None) -> Step:
        a = self.s.a
        assert a is not None
        return self.feed(
            IvrInput(
                source="ami",
                pbx_id=SERVER_ID,
                callback_id=self.cb,
                leg=LegType.A,
                occurred_at=now,
                prompt=prompt,
                digits=digits,
                uniqueid=uniqueid or a.uniqueid,
            ),
            now,
        )

    def dial(
        self,
        status: DialStatus,
        now: datetime,
        *,
        occurred_at: datetime | None = None,
        dest_uniqueid: str = "b-uid-1",
    ) -> Step:
        return self.feed(
            DialResult(
                source="ami",
                pbx_id=SERVER_ID,
                callback_id=self.cb,
                leg=LegType.B,
                occurred_at=occurred_at or now,
                dial_status=status,
                dest_uniqueid=dest_uniqueid,
                dest_channel="PJSIP/trunk-b1",
                channel="PJSIP/trunk-a1",
            ),
            now,
        )

    def hangup(
        self,
        uniqueid: str | None,
        leg: LegType | None,
        now: datetime,
        cause: int = 16,
        *,
        occurred_at: datetime | None = None,
        sip_code: int | None = None,
    ) -> Step:
        return self.feed(
            ChannelHangup(
                source="ami",
                pbx_id=SERVER_ID,
                callback_id=self.cb,
                leg=leg,
                uniqueid=uniqueid,
                occurred_at=occurred_at or now,
                q850_cause=cause,
                sip_code=sip_code,
            ),
            now,
        )

    def hangup_a(self, now: datetime, cause: int = 16, **kw: Any) -> Step:
        a = self.s.a
        assert a is not None
        return self.hangup(a.uniqueid, LegType.A, now, cause, **kw)

    def hangup_initiation(self, now: datetime, cause: int = 17, **kw: Any) -> Step:
        return self.hangup(self.s.initiation_uniqueid, LegType.INITIATION, now, cause, **kw)

    def command_failed(self, command_id: str, now: datetime, *, outcome_unknown: bool = False) -> Step:
        return self.feed(
            CommandFailed(
                source="originator",
                pbx_id=SERVER_ID,
                callback_id=self.cb,
                occurred_at=now,
                command_id=command_id,
                command_type="pbx.originate",
                error="AMI refused",
                outcome_unknown=outcome_unknown,
            ),
            now,
        )
