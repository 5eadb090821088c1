"""The state of one callback session, as the processors keep it in their table.

One ``Session`` per callback id, in the Faust table whose changelog is
``callback-processors-sessions-changelog``. It holds everything the next decision needs, so a
decision never reads anything but the session, the input and the reference data:

* what the initiation said and the settings that were in force then (a configuration change
  applies to new callbacks, never half-way through one);
* who the caller is once recognised (``identity``), and who pays what;
* the legs under way (``a``, ``b`` and whether the initiation call has ended);
* the one timer the session waits for (``due_at`` / ``due_kind`` / ``timer_seq``);
* what makes it idempotent: the ids of the inputs it has applied, and the outputs of those inputs
  that are not yet known to be on Kafka (``outbox``, see ``processors.apply``).

A frozen pydantic model: the in-memory table holds these objects, so a change is always a copy.
"""

from __future__ import annotations

from pydantic import Field

from schemas.callback import TERMINAL_STATES, CallbackId, InitiationOrigin, LegType, Payer, SessionState
from schemas.control import TimerKind
from schemas.envelope import PhoneNumber, Record, UtcDatetime
from schemas.pbx_events import IvrPrompt
from schemas.reference import AuthMethod, CallbackServer, CallbackSettings, EntityId

#: how many input ids a session remembers; a callback takes a few dozen inputs at most, and
#: Kafka redelivers only what came after the last committed offset
APPLIED_MEMORY = 64


class Identity(Record):
    """Who the caller is, once recognised: the payer of leg A, leg B and (ANI / pinless) the
    initiation, and the device it was recognised by (Send Device CID)."""

    payer: Payer
    device_id: EntityId | None = None
    device_cid: PhoneNumber | None = None


class PbxRoute(Record):
    """What the session needs of its Callback Server: the dial string and the dialplan contexts
    (a copy, without the AMI credentials, so the session never depends on a later change)."""

    server_id: EntityId
    originate_channel: str
    originate_context: str
    originate_exten: str
    dial_b_context: str
    pin_context: str
    destination_context: str
    card_number_context: str
    busy_ivr_context: str
    failed_ivr_context: str

    @classmethod
    def of(cls, server: CallbackServer) -> PbxRoute:
        return cls(**{name: getattr(server, name) for name in cls.model_fields})

    def channel_for(self, number: str) -> str:
        """The Originate ``Channel`` for ``number`` (``{number}`` in the template is replaced)."""
        return self.originate_channel.replace("{number}", number)


class Leg(Record):
    """A leg that was started: enough to know its events and to publish it when it ends."""

    leg: LegType
    attempt: int
    number: PhoneNumber = Field(description="the rated number: called-back number (A), destination (B)")
    cid: PhoneNumber | None = Field(default=None, description="caller ID presented")
    command_id: str
    #: the Uniqueid its events carry: known in advance for leg A (the Originate's ChannelId),
    #: learnt from the dial result for leg B
    uniqueid: str | None = None
    channel: str | None = None
    started_at: UtcDatetime
    answered_at: UtcDatetime | None = None
    ended: bool = False
    #: leg B: the limit the balance set (None = unlimited)
    max_duration_s: int | None = None


class OutboxEntry(Record):
    """An output of an applied input, kept until Kafka has it for sure (see ``processors.apply``)."""

    input_id: str
    source_topic: str
    source_partition: int
    source_offset: int
    topic: str
    key: str
    value: str


class Session(Record):
    callback_id: CallbackId
    state: SessionState
    #: transitions published so far (``SessionTransition.sequence`` of the last one)
    sequence: int = 0
    #: partition of the session's inputs: the timer wheel rebuilds only its own partitions' timers
    partition: int = -1

    # --- the initiation ---------------------------------------------------------------------------
    origin: InitiationOrigin
    received_at: UtcDatetime
    ani: PhoneNumber | None = None
    did: PhoneNumber | None = None
    pbx_id: EntityId | None = Field(default=None, description="PBX of the initiation call")
    initiation_channel: str | None = None
    initiation_uniqueid: str | None = None
    initiation_dropped_at: UtcDatetime | None = Field(
        default=None, description="when the Hangup of the initiation call was sent"
    )
    initiation_open: bool = Field(default=False, description="the initiation leg has not been published")
    dialplan_id: EntityId | None = None
    auth_method: AuthMethod | None = None
    hangup_cause: int = 16
    settings: CallbackSettings | None = None
    route: PbxRoute | None = None
    callback_user_id: EntityId | None = None
    callback_number: PhoneNumber | None = None
    destination: PhoneNumber | None = None

    # --- who the caller is --------------------------------------------------------------------------
    identity: Identity | None = None
    #: recognised at the initiation (ANI, pinless card): then the caller also pays the initiation
    recognised_at_initiation: bool = False
    #: the caller needs no (more) IVR authentication; only then does it pay leg A and may dial B
    #: (ANI-then-PIN recognises the caller at the initiation but still asks the PIN)
    authenticated: bool = False
    #: admitted by the fraud guard (released when the session ends)
    guarded: bool = False

    # --- the legs -----------------------------------------------------------------------------------
    attempt: int = 0
    a: Leg | None = None
    b: Leg | None = None
    #: which input the IVR waits for, and how many wrong or empty entries there have been
    prompt: IvrPrompt | None = None
    wrong_entries: int = 0
    card_number: str | None = None
    #: IVR redirects sent so far: makes each redirect's command id distinct
    redirects: int = 0
    #: every leg has ended and been published; then only the expiry timer is left
    closed_at: UtcDatetime | None = None

    # --- the one timer ------------------------------------------------------------------------------
    due_at: UtcDatetime | None = None
    due_kind: TimerKind | None = None
    timer_seq: int = 0

    # --- idempotency ----------------------------------------------------------------------------------
    applied: tuple[str, ...] = ()
    outbox: tuple[OutboxEntry, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES
