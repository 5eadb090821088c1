"""The callback session state machine: one pure function steps one session by one input.

``step(session, input, world, now)`` returns the new session (or that it is to be forgotten) and
what the step causes: state transitions (``callback.sessions``), PBX commands (``pbx.commands``),
finished legs (``callback.legs``) and fraud-guard requests (``callback.admission``). The session's
one timer is part of the returned session (``due_at`` / ``due_kind`` / ``timer_seq``). No I/O, no
clock: ``now`` is the time of the input record, so replaying an input reproduces its outputs exactly,
ids and envelope times included, and the consumers' deduplication (originator journal, rater) sees
the same record again.

States (docs/processors.md has the diagram)::

    requested -> rejected
              -> scheduled(attempt n, due) -> originating_a -> a_answered -> authenticating
                                                            -> awaiting_destination -> dialing_b
                                                            -> bridged -> completed
    originating_a -> scheduled (retry after Retry Time) | failed_a (after Max Retries)
    authenticating -> auth_failed (N wrong entries: Failed IVR)
    awaiting_destination | dialing_b -> failed_b (no rate, no money: Failed IVR; busy: Busy IVR)

Inputs and what they do:

* ``callback.initiation``: the initiation decision (``processors.initiation``); refused ->
  ``rejected`` and the initiation call dropped with the dial plan's cause; accepted -> the fraud
  guard is asked, and once admitted the initiation is dropped (after ``initiation_ring_s``) and
  attempt 1 is due.
* ``callback.admission_verdict``: the guard's answer.
* ``callback.tick``: the session's timer is due: an attempt, a watchdog, or the expiry.
* ``originate.result``: leg A answered (IVR) or not (retry / ``failed_a``).
* ``ivr.input``: card number, PIN, destination.
* ``dial.result``: leg B answered (``bridged``) or not (Busy IVR / Failed IVR).
* ``channel.hangup``: a leg ended; it is published as a finished leg.
* ``command.failed``: the originator could not execute a command.

Watchdogs: every state that waits for the PBX has a timer, so a lost event (an AMI connection
down while Asterisk sent it) never leaves a session, or a leg, waiting for ever: the session acts as
if the event had said "nothing happened", hangs up what may still be up, and publishes the open
legs with the time the watchdog fired as their end (the initiation call: the time its Hangup was
sent, when it was).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from callback.reference import ReferenceData
from callback.settings import SessionTimeouts
from processors.auth import AuthFailure, authenticate
from processors.caller_id import choose_caller_id
from processors.destination import decide_destination
from processors.initiation import NO_DIALPLAN_CAUSE, decide_initiation
from processors.state import APPLIED_MEMORY, Leg, PbxRoute, Session
from producers.action_ids import channel_id_for
from schemas.callback import (
    TERMINAL_STATES,
    CallbackInitiation,
    Disposition,
    FinishedLeg,
    InitiationOrigin,
    LegType,
    Payer,
    PayerKind,
    SessionState,
    SessionTransition,
    command_id_for,
    leg_id_for,
)
from schemas.control import AdmissionRequest, AdmissionVerdict, SessionReleased, TimerKind, TimerTick
from schemas.hangup_causes import sip_for_q850
from schemas.pbx_commands import DialLegB, Hangup, Originate, PbxCommandBase, Redirect
from schemas.pbx_events import (
    ChannelHangup,
    CommandFailed,
    DialResult,
    DialStatus,
    IvrInput,
    IvrPrompt,
    OriginateOutcome,
    OriginateResult,
    PbxEventBase,
)
from schemas.reference import AuthMethod
from schemas.topics import CALLBACK_ADMISSION, CALLBACK_LEGS, CALLBACK_SESSIONS, PBX_COMMANDS

log = logging.getLogger(__name__)

S = SessionState
NORMAL_CLEARING = 16

#: Q.850 cause and disposition of a leg A attempt by the Originate's outcome
ORIGINATE_FAILURES: dict[OriginateOutcome, tuple[Disposition, int]] = {
    OriginateOutcome.BUSY: (Disposition.BUSY, 17),
    OriginateOutcome.NO_ANSWER: (Disposition.NO_ANSWER, 19),
    OriginateOutcome.CONGESTION: (Disposition.CONGESTION, 34),
    OriginateOutcome.HANGUP: (Disposition.FAILED, 21),
    OriginateOutcome.FAILED: (Disposition.FAILED, 38),
}
#: ... and of leg B by the Dial status
DIAL_FAILURES: dict[DialStatus, tuple[Disposition, int]] = {
    DialStatus.BUSY: (Disposition.BUSY, 17),
    DialStatus.NOANSWER: (Disposition.NO_ANSWER, 19),
    DialStatus.CANCEL: (Disposition.NO_ANSWER, 16),
    DialStatus.CONGESTION: (Disposition.CONGESTION, 34),
    DialStatus.CHANUNAVAIL: (Disposition.FAILED, 20),
}
#: initiation reasons that a fresher copy of the reference data might turn into an acceptance
REFERENCE_MISSES = frozenset(
    {"unknown_did", "no_dialplan", "not_configured", "unknown_ani", "unknown_user", "no_callback_tariff",
     "no_callback_server", "origin_not_allowed", "no_rate_for_callback_number"}
)

Input = CallbackInitiation | PbxEventBase | TimerTick | AdmissionVerdict


@dataclass(frozen=True)
class World:
    """What a step may consult besides the session and the input."""

    ref: ReferenceData
    timeouts: SessionTimeouts = SessionTimeouts()
    source: str = "processors"


Output = tuple[str, str, Any]  # topic, key, record (a pydantic model)


@dataclass
class Step:
    session: Session | None
    #: True: forget the session (its retention is over)
    delete: bool = False
    transitions: list[SessionTransition] = field(default_factory=list)
    commands: list[PbxCommandBase] = field(default_factory=list)
    legs: list[FinishedLeg] = field(default_factory=list)
    admissions: list[AdmissionRequest | SessionReleased] = field(default_factory=list)

    def outputs(self) -> list[Output]:
        """Every record this step publishes, in the order it must be published."""
        out: list[Output] = [(CALLBACK_SESSIONS.name, t.callback_id, t) for t in self.transitions]
        out += [(PBX_COMMANDS.name, c.callback_id, c) for c in self.commands]
        out += [(CALLBACK_LEGS.name, leg.payer.key, leg) for leg in self.legs]
        out += [(CALLBACK_ADMISSION.name, a.number, a) for a in self.admissions]
        return out

    @property
    def reason(self) -> str:
        """The reason of the last transition ('' when there was none)."""
        return self.transitions[-1].reason if self.transitions else ""


def step(session: Session | None, event: Input, world: World, now: datetime) -> Step:
    """Apply one input to one session. ``session`` is None for a callback id not seen before."""
    if isinstance(event, CallbackInitiation):
        if session is not None:
            log.info("initiation %s seen before (state %s); ignored", event.callback_id, session.state)
            return Step(session)
        return _Stepper(_new_session(event), world, now).initiation(event)
    if session is None:
        log.debug("%s for unknown callback %s ignored", getattr(event, "type", "?"), event.callback_id)
        return Step(None)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return Step(session)  # channel.answered and the like: the results handled say it all
    return handler(_Stepper(session, world, now), event)


def _new_session(init: CallbackInitiation) -> Session:
    did_call = init.origin is InitiationOrigin.DID
    return Session(
        callback_id=init.callback_id,
        state=S.REQUESTED,
        origin=init.origin,
        received_at=init.received_at,
        ani=init.ani,
        did=init.did,
        pbx_id=init.pbx_id,
        initiation_channel=init.channel,
        initiation_uniqueid=init.uniqueid,
        initiation_open=did_call and init.channel is not None,
        callback_number=init.callback_number if init.callback_number is not None else init.ani,
        destination=init.destination,
        hangup_cause=NO_DIALPLAN_CAUSE,
    )


class _Stepper:
    """Builds one ``Step``: ``s`` is the session as changed so far, the lists collect outputs."""

    def __init__(self, session: Session, world: World, now: datetime) -> None:
        self.s = session
        self.world = world
        self.now = now
        self.out = Step(session)

    # --- small tools ---
    def set(self, **changes: Any) -> None:
        self.s = self.s.model_copy(update=changes)

    def done(self) -> Step:
        """Close the session when its outcome is known and every leg has been published."""
        s = self.s
        if s.terminal and s.closed_at is None:
            if self._legs_open():
                if s.due_kind is not TimerKind.WATCHDOG:
                    self.due(TimerKind.WATCHDOG, self.world.timeouts.closing_s)
            else:
                self.set(closed_at=self.now)
                self.due(TimerKind.EXPIRE, self.world.timeouts.retention_s)
                if s.guarded and s.callback_number is not None:
                    self.release(s.callback_number)
        # a leg carries the session's state once the step that ended it is complete: the outcome,
        # for the legs whose end ends the session (leg B's hangup completes the callback)
        state = self.s.state
        self.out.legs = [
            leg if leg.final_state is state else leg.model_copy(update={"final_state": state})
            for leg in self.out.legs
        ]
        self.out.session = self.s
        return self.out

    def release(self, number: str) -> None:
        """Tell the fraud guard this session no longer counts as live for ``number``."""
        self.out.admissions.append(
            SessionReleased(
                event_id=f"release:{self.s.callback_id}",
                source=self.world.source,
                time=self.now,
                callback_id=self.s.callback_id,
                number=number,
            )
        )

    def _legs_open(self) -> bool:
        s = self.s
        return (
            s.initiation_open
            or (s.a is not None and s.a.answered_at is not None and not s.a.ended)
            or (s.b is not None and s.b.answered_at is not None and not s.b.ended)
        )

    def due(self, kind: TimerKind, after_s: float, at: datetime | None = None) -> None:
        when = at if at is not None else self.now + timedelta(seconds=after_s)
        self.set(due_at=when, due_kind=kind, timer_seq=self.s.timer_seq + 1)

    def clear_due(self) -> None:
        self.set(due_at=None, due_kind=None)

    def go(self, to: SessionState, reason: str = "", **extra: Any) -> None:
        s = self.s
        seq = s.sequence + 1
        self.out.transitions.append(
            SessionTransition(
                event_id=f"{s.callback_id}:transition:{seq}",
                source=self.world.source,
                time=self.now,
                callback_id=s.callback_id,
                sequence=seq,
                from_state=None if seq == 1 else s.state,
                to_state=to,
                attempt=s.attempt,
                reason=reason,
                auth_method=s.auth_method,
                payer=self._leg_a_payer(),
                callback_number=s.callback_number,
                destination=s.destination,
                **extra,
            )
        )
        self.set(state=to, sequence=seq)
        if to in TERMINAL_STATES:
            self.clear_due()  # the outcome is known: only the legs still up are waited for now
            log.info("callback %s: %s (%s)", s.callback_id, to.value, reason)

    def command(
        self, cls: type[PbxCommandBase], for_leg: LegType, kind: str, server_id: str, **fields: Any
    ) -> Any:
        """A PBX command for ``for_leg``; its id is made of the callback, leg, attempt and ``kind``."""
        s = self.s
        attempt = {LegType.A: s.attempt, LegType.B: 1, LegType.INITIATION: 0}[for_leg]
        command_id = command_id_for(s.callback_id, for_leg, attempt, kind)
        cmd = cls(
            event_id=command_id[:128],
            source=self.world.source,
            time=self.now,
            command_id=command_id,
            callback_id=s.callback_id,
            server_id=server_id,
            **fields,
        )
        self.out.commands.append(cmd)
        return cmd

    # --- payers ---
    def _callback_user(self) -> Payer | None:
        cb_user = self.s.callback_user_id
        return Payer(kind=PayerKind.CALLBACK_USER, id=cb_user) if cb_user else None

    def _leg_a_payer(self) -> Payer | None:
        """Seed: leg A is paid by the recognised user or card, else by the Callback User."""
        s = self.s
        if s.identity is not None and s.authenticated:
            return s.identity.payer
        return self._callback_user()

    def _initiation_payer(self) -> Payer | None:
        """Seed: a caller recognised at the initiation (ANI, pinless card) pays it."""
        s = self.s
        if s.identity is not None and s.recognised_at_initiation:
            return s.identity.payer
        return self._callback_user()

    # --- legs ---
    def emit_leg(
        self,
        leg: LegType,
        attempt: int,
        *,
        payer: Payer | None,
        number: str,
        cid: str | None,
        pbx_id: str | None,
        started: datetime,
        answered: datetime | None,
        ended: datetime,
        disposition: Disposition,
        cause: int,
        sip_code: int | None = None,
    ) -> None:
        s = self.s
        if payer is None:
            log.error("callback %s: %s leg has no payer (no Callback User configured); not published",
                      s.callback_id, leg.value)
            return
        ended = max(ended, started)  # PBX and processors clocks differ: keep the leg consistent
        if answered is not None:
            answered = min(max(answered, started), ended)
        leg_id = leg_id_for(s.callback_id, leg, attempt)
        self.out.legs.append(
            FinishedLeg(
                event_id=leg_id[:128],
                source=self.world.source,
                time=self.now,
                leg_id=leg_id,
                callback_id=s.callback_id,
                leg=leg,
                attempt=attempt,
                pbx_id=pbx_id,
                did=s.did,
                src=cid,
                dst=number,
                started_at=started,
                answered_at=answered,
                ended_at=ended,
                disposition=Disposition.ANSWERED if answered is not None else disposition,
                q850_cause=cause,
                sip_code=sip_code if sip_code is not None else sip_for_q850(cause),
                payer=payer,
                auth_method=s.auth_method,
                final_state=s.state,
            )
        )

    def close_initiation(self, ended: datetime, cause: int, sip_code: int | None = None) -> None:
        s = self.s
        if not s.initiation_open:
            return
        self.set(initiation_open=False)
        self.emit_leg(
            LegType.INITIATION,
            0,
            payer=self._initiation_payer(),
            number=s.ani or "0",  # withheld caller ID: the origin is unknown
            cid=s.ani,
            pbx_id=s.pbx_id,
            started=s.received_at,
            answered=None,
            ended=ended,
            disposition=_disposition_for_cause(cause),
            cause=cause,
            sip_code=sip_code,
        )

    def close_a(self, ended: datetime, cause: int, sip_code: int | None = None,
                disposition: Disposition = Disposition.NO_ANSWER) -> None:
        a = self.s.a
        if a is None or a.ended:
            return
        self.set(a=a.model_copy(update={"ended": True}))
        self.emit_leg(
            LegType.A, a.attempt, payer=self._leg_a_payer(), number=a.number, cid=a.cid,
            pbx_id=self._server_id(), started=a.started_at, answered=a.answered_at, ended=ended,
            disposition=disposition, cause=cause, sip_code=sip_code,
        )

    def close_b(self, ended: datetime, cause: int, sip_code: int | None = None,
                disposition: Disposition = Disposition.NO_ANSWER) -> None:
        b, s = self.s.b, self.s
        if b is None or b.ended:
            return
        self.set(b=b.model_copy(update={"ended": True}))
        payer = s.identity.payer if s.identity is not None else None
        self.emit_leg(
            LegType.B, b.attempt, payer=payer, number=b.number, cid=b.cid, pbx_id=self._server_id(),
            started=b.started_at, answered=b.answered_at, ended=ended, disposition=disposition,
            cause=cause, sip_code=sip_code,
        )

    def _server_id(self) -> str | None:
        return self.s.route.server_id if self.s.route is not None else None

    # --- initiation ---
    def initiation(self, init: CallbackInitiation) -> Step:
        world, s = self.world, self.s
        self.go(S.REQUESTED)
        decision = decide_initiation(init, world.ref)
        identity = decision.identity
        self.set(
            dialplan_id=decision.dialplan_id,
            auth_method=decision.auth_method,
            hangup_cause=decision.hangup_cause or s.hangup_cause,
            settings=decision.settings,
            route=PbxRoute.of(decision.server) if decision.server is not None else None,
            callback_user_id=decision.settings.callback_user_id if decision.settings else None,
            identity=identity,
            recognised_at_initiation=identity is not None and init.origin is InitiationOrigin.DID,
            authenticated=identity is not None and decision.auth_method is not AuthMethod.ANI_THEN_PIN,
        )
        age = (self.now - init.received_at).total_seconds()
        if age > world.timeouts.max_initiation_age_s:  # after the above: dropped with the plan's cause
            return self.refuse("stale_initiation", f"received {age:.0f} s ago")
        if not decision.accepted:
            return self.refuse(decision.reason, decision.detail)
        guard = decision.guard
        if guard is not None and guard.counting and self.s.callback_number is not None:
            self.out.admissions.append(
                AdmissionRequest(
                    event_id=f"admission:{s.callback_id}",
                    source=world.source,
                    time=self.now,
                    callback_id=s.callback_id,
                    number=self.s.callback_number,
                    did=s.did,
                    received_at=init.received_at,
                    per_number_per_minute=guard.per_number_per_minute,
                    per_did_per_minute=guard.per_did_per_minute,
                    one_live_session=guard.one_live_session,
                )
            )
            self.due(TimerKind.WATCHDOG, world.timeouts.admission_s)
            return self.done()
        return self.admitted()

    def verdict(self, verdict: AdmissionVerdict) -> Step:
        if self.s.state is not S.REQUESTED:
            if verdict.admitted and self.s.callback_number is not None:
                # admitted too late (the session gave up waiting): free the number at the guard
                self.release(self.s.callback_number)
            return self.done()
        if not verdict.admitted:
            return self.refuse(verdict.reason or "fraud_guard")
        self.set(guarded=True)
        return self.admitted()

    def refuse(self, reason: str, detail: str = "") -> Step:
        self.clear_due()
        self.go(S.REJECTED, reason)
        if detail:
            log.info("callback %s refused: %s", self.s.callback_id, detail)
        self.drop_initiation()
        return self.done()

    def drop_initiation(self) -> None:
        """Hang up the initiation call with the dial plan's cause (it is never answered)."""
        s = self.s
        if s.origin is not InitiationOrigin.DID or s.initiation_dropped_at is not None:
            return
        if s.initiation_channel is None or s.pbx_id is None:
            return
        self.command(Hangup, LegType.INITIATION, "hangup", s.pbx_id, channel=s.initiation_channel,
                     cause=s.hangup_cause)
        self.set(initiation_dropped_at=self.now)

    def admitted(self) -> Step:
        s = self.s
        ring = (s.settings.initiation_ring_s or 0) if s.settings is not None else 0
        first_due = max(self.now, s.received_at + timedelta(seconds=ring))
        self.set(attempt=1)
        self.go(S.SCHEDULED, due_at=first_due)
        if first_due <= self.now:
            return self.originate()
        self.due(TimerKind.ATTEMPT, 0, at=first_due)
        return self.done()

    # --- timers ---
    def tick(self, tick: TimerTick) -> Step:
        s = self.s
        if tick.timer_seq != s.timer_seq or tick.kind is not s.due_kind:
            return self.out  # a late or repeated tick: the timer it was for is gone
        self.clear_due()
        if tick.kind is TimerKind.EXPIRE:
            return Step(None, delete=True)
        if tick.kind is TimerKind.ATTEMPT:
            return self.originate() if s.state is S.SCHEDULED else self.done()
        return self.watchdog()

    def watchdog(self) -> Step:
        s, now = self.s, self.now
        state = s.state
        log.warning("callback %s: watchdog in state %s", s.callback_id, state.value)
        if state is S.REQUESTED:
            return self.refuse("admission_timeout")
        if state is S.ORIGINATING_A:
            return self.a_failed(Disposition.NO_ANSWER, 19, now, "no_originate_result")
        if state in (S.A_ANSWERED, S.AUTHENTICATING):
            self.hang_up_a()
            self.go(S.AUTH_FAILED, "ivr_timeout")
        elif state is S.AWAITING_DESTINATION:
            self.hang_up_a()
            self.go(S.FAILED_B, "ivr_timeout")
        elif state is S.DIALING_B:
            self.hang_up_a()
            self.close_b(now, 19)
            self.go(S.FAILED_B, "dial_timeout")
        elif state is S.BRIDGED:
            # the hangups never came; the PBX cut the call at leg B's limit at the latest, so no
            # leg is billed past what the balance was checked for
            self.hang_up_a()
            end = now
            b = s.b
            if b is not None and b.answered_at is not None and b.max_duration_s is not None:
                end = min(now, b.answered_at + timedelta(seconds=b.max_duration_s))
            self.close_b(end, NORMAL_CLEARING)
            self.close_a(end, NORMAL_CLEARING)
            self.go(S.COMPLETED, "watchdog")
        else:  # the outcome is known; the hangups of the legs still up never came
            self.hang_up_a()
            self.close_initiation(s.initiation_dropped_at or now, s.hangup_cause)
            self.close_b(now, NORMAL_CLEARING)
            self.close_a(now, NORMAL_CLEARING)
        return self.done()

    # --- leg A ---
    def originate(self) -> Step:
        s, world = self.s, self.world
        self.drop_initiation()
        settings, route = s.settings, s.route
        number = s.callback_number
        if settings is None or route is None or number is None:
            return self.refuse("not_configured")
        identity = self.s.identity
        cid = choose_caller_id(
            settings,
            origin=s.origin,
            source=s.ani,
            device_cid=identity.device_cid if identity is not None else None,
        ).number
        cmd = self.command(
            Originate,
            LegType.A,
            "originate",
            route.server_id,
            leg=LegType.A,
            attempt=s.attempt,
            number=number,
            channel=route.channel_for(number),
            context=route.originate_context,
            exten=route.originate_exten,
            caller_id_num=cid,
            timeout_ms=int(settings.wait_time_s or 30) * 1000,
        )
        self.set(
            a=Leg(
                leg=LegType.A,
                attempt=s.attempt,
                number=number,
                cid=cid,
                command_id=cmd.command_id,
                uniqueid=channel_id_for(cmd.command_id),
                started_at=self.now,
            ),
            b=None,
        )
        self.go(S.ORIGINATING_A)
        wait = float(settings.wait_time_s or 30) + world.timeouts.originate_margin_s
        self.due(TimerKind.WATCHDOG, wait)
        return self.done()

    def originate_result(self, result: OriginateResult) -> Step:
        s, a = self.s, self.s.a
        if s.state is not S.ORIGINATING_A or a is None:
            return self.out
        if result.command_id is not None and result.command_id != a.command_id:
            return self.out
        if result.command_id is None and (result.leg is not LegType.A or result.attempt != a.attempt):
            return self.out
        if result.outcome is OriginateOutcome.ANSWERED:
            answered = max(result.occurred_at, a.started_at)
            self.set(a=a.model_copy(update={"answered_at": answered, "channel": result.channel}))
            self.go(S.A_ANSWERED)
            return self.after_answer()
        disposition, cause = ORIGINATE_FAILURES[result.outcome]
        return self.a_failed(disposition, cause, result.occurred_at, f"leg_a_{result.outcome.value}")

    def a_failed(self, disposition: Disposition, cause: int, ended: datetime, reason: str) -> Step:
        """Leg A's attempt was not answered: publish it, then retry after Retry Time or give up."""
        s = self.s
        self.close_a(ended, cause, disposition=disposition)
        self.set(a=None)
        settings = s.settings
        max_retries = (settings.max_retries or 0) if settings is not None else 0
        if s.attempt < 1 + max_retries:
            retry_s = float(settings.retry_time_s or 30) if settings is not None else 30.0
            due_at = self.now + timedelta(seconds=retry_s)
            self.set(attempt=s.attempt + 1)
            self.go(S.SCHEDULED, reason, due_at=due_at)
            self.due(TimerKind.ATTEMPT, retry_s)
        else:
            self.clear_due()
            self.go(S.FAILED_A, f"{reason}: no retries left")
        return self.done()

    def hang_up_a(self, cause: int = NORMAL_CLEARING) -> None:
        a, route = self.s.a, self.s.route
        if a is None or a.channel is None or a.ended or route is None:
            return
        self.command(Hangup, LegType.A, "hangup", route.server_id, channel=a.channel, cause=cause)

    # --- IVR ---
    def after_answer(self) -> Step:
        s = self.s
        if not s.authenticated:
            first = IvrPrompt.CARD_NUMBER if s.auth_method is AuthMethod.CARD_NUMBER_PIN else IvrPrompt.PIN
            self.go(S.AUTHENTICATING)
            self.prompt(first)
        elif s.destination is not None:
            return self.dial_destination()
        else:
            self.go(S.AWAITING_DESTINATION)
            self.prompt(IvrPrompt.DESTINATION)
        return self.done()

    def prompt(self, which: IvrPrompt) -> None:
        route = self.s.route
        assert route is not None  # a session with leg A up has a route
        context = {
            IvrPrompt.PIN: route.pin_context,
            IvrPrompt.CARD_NUMBER: route.card_number_context,
            IvrPrompt.DESTINATION: route.destination_context,
        }[which]
        self.redirect(context, "s", f"{which.value}_prompt")
        self.set(prompt=which)
        self.due(TimerKind.WATCHDOG, self.world.timeouts.ivr_s)

    def redirect(self, context: str, exten: str, purpose: str) -> None:
        a, route = self.s.a, self.s.route
        if a is None or a.channel is None or route is None:
            log.error("callback %s: no leg-A channel to redirect to %s", self.s.callback_id, context)
            return
        n = self.s.redirects + 1
        self.set(redirects=n)
        self.command(Redirect, LegType.A, f"redirect.{purpose}.{n}", route.server_id, channel=a.channel,
                     context=context, exten=exten, purpose=purpose)

    def play_and_end(self, to: SessionState, reason: str, *, busy: bool = False) -> Step:
        """Play the Busy IVR (leg B busy) or the Failed IVR to leg A, which then hangs up; without
        that IVR configured, hang leg A up at once."""
        s = self.s
        ivr = (s.settings.busy_ivr if busy else s.settings.failed_ivr) if s.settings is not None else None
        route = s.route
        if ivr and route is not None:
            context = route.busy_ivr_context if busy else route.failed_ivr_context
            self.redirect(context, ivr, "busy_ivr" if busy else "failed_ivr")
        else:
            self.hang_up_a(17 if busy else NORMAL_CLEARING)
        self.set(prompt=None)
        self.clear_due()
        self.go(to, reason)
        return self.done()

    def ivr_input(self, event: IvrInput) -> Step:
        s, a = self.s, self.s.a
        if a is None or event.uniqueid != a.uniqueid or event.prompt is not s.prompt:
            return self.out
        if s.state is S.AUTHENTICATING:
            if event.prompt is IvrPrompt.CARD_NUMBER:
                self.set(card_number=event.digits)
                self.prompt(IvrPrompt.PIN)
                return self.done()
            return self.check_pin(event.digits)
        if s.state is S.AWAITING_DESTINATION:
            digits = event.digits.strip("#")
            if not digits.isdigit() or len(digits) > 20:
                return self.wrong_entry("no_destination", IvrPrompt.DESTINATION, S.FAILED_B)
            self.set(destination=digits)
            return self.dial_destination()
        return self.out

    def check_pin(self, pin: str) -> Step:
        s = self.s
        assert s.auth_method is not None
        result = authenticate(s.auth_method, pin.strip("#"), self.world.ref, recognised=s.identity,
                              card_number=s.card_number)
        if isinstance(result, AuthFailure):
            first = IvrPrompt.CARD_NUMBER if s.auth_method is AuthMethod.CARD_NUMBER_PIN else IvrPrompt.PIN
            return self.wrong_entry(result.reason, first, S.AUTH_FAILED)
        self.set(identity=result, authenticated=True, wrong_entries=0, card_number=None)
        if s.destination is not None:
            return self.dial_destination()
        self.go(S.AWAITING_DESTINATION)
        self.prompt(IvrPrompt.DESTINATION)
        return self.done()

    def wrong_entry(self, why: str, again: IvrPrompt, fail_state: SessionState) -> Step:
        s = self.s
        wrong = s.wrong_entries + 1
        self.set(wrong_entries=wrong)
        allowed = (s.settings.pin_attempts or 3) if s.settings is not None else 3
        log.info("callback %s: wrong entry %d of %d (%s)", s.callback_id, wrong, allowed, why)
        if wrong >= allowed:
            return self.play_and_end(fail_state, f"{why}: {wrong} wrong entries")
        self.prompt(again)
        return self.done()

    # --- leg B ---
    def dial_destination(self) -> Step:
        s, world = self.s, self.world
        a, identity, route, settings = s.a, s.identity, s.route, s.settings
        assert a is not None and identity is not None and route is not None and settings is not None
        destination = s.destination or ""
        decision = decide_destination(
            identity.payer, destination, world.ref, leg_a_number=a.number, leg_a_answered_at=a.answered_at,
            now=self.now,
        )
        if not decision.allowed:
            return self.play_and_end(S.FAILED_B, decision.reason)
        cid = choose_caller_id(settings, origin=s.origin, source=s.ani, device_cid=identity.device_cid).number
        wait_s = int(settings.wait_time_s or 30)
        cmd = self.command(
            DialLegB, LegType.B, "dial_b", route.server_id, a_channel=a.channel or "", number=destination,
            context=route.dial_b_context, caller_id_num=cid, timeout_s=wait_s,
            max_duration_s=decision.max_duration_s, attempt=1,
        )
        self.set(
            prompt=None,
            b=Leg(leg=LegType.B, attempt=1, number=destination, cid=cid, command_id=cmd.command_id,
                  started_at=self.now, max_duration_s=decision.max_duration_s),
        )
        self.go(S.DIALING_B, f"max_duration_s={decision.max_duration_s}" if decision.max_duration_s else "")
        self.due(TimerKind.WATCHDOG, wait_s + world.timeouts.dial_margin_s)
        return self.done()

    def dial_result(self, result: DialResult) -> Step:
        s, b = self.s, self.s.b
        if s.state is not S.DIALING_B or b is None or b.ended or result.leg is not LegType.B:
            return self.out
        if result.dial_status is DialStatus.ANSWER:
            self.set(b=b.model_copy(update={
                "answered_at": max(result.occurred_at, b.started_at),
                "uniqueid": result.dest_uniqueid,
                "channel": result.dest_channel,
            }))
            self.go(S.BRIDGED)
            timeouts, limit = self.world.timeouts, b.max_duration_s
            self.due(TimerKind.WATCHDOG, limit + timeouts.bridged_margin_s if limit is not None
                     else timeouts.bridged_unlimited_s)
            return self.done()
        disposition, cause = DIAL_FAILURES.get(result.dial_status, (Disposition.FAILED, 31))
        self.close_b(result.occurred_at, cause, disposition=disposition)
        if result.dial_status is DialStatus.CANCEL:
            return self.done()  # the caller hung up while B rang: leg A's hangup ends the session
        busy = result.dial_status is DialStatus.BUSY
        return self.play_and_end(S.FAILED_B, f"destination_{result.dial_status.value.lower()}", busy=busy)

    # --- hangups and failures ---
    def hangup(self, event: ChannelHangup) -> Step:
        s, a, b = self.s, self.s.a, self.s.b
        uid, at = event.uniqueid, event.occurred_at
        if uid is not None and uid == s.initiation_uniqueid:
            self.close_initiation(at, event.q850_cause, event.sip_code)
            return self.done()
        if a is not None and uid == a.uniqueid and a.answered_at is not None and not a.ended:
            self.close_a(at, event.q850_cause, event.sip_code)
            state = s.state
            if state is S.BRIDGED:
                self.go(S.COMPLETED, "caller_hangup")
            elif state is S.DIALING_B:
                self.close_b(at, NORMAL_CLEARING)
                self.go(S.FAILED_B, "caller_hangup")
            elif state in (S.A_ANSWERED, S.AUTHENTICATING):
                self.go(S.AUTH_FAILED, "caller_hangup")
            elif state is S.AWAITING_DESTINATION:
                self.go(S.FAILED_B, "caller_hangup")
            return self.done()
        if b is not None and b.answered_at is not None and not b.ended and (
            uid == b.uniqueid or (b.uniqueid is None and event.leg is LegType.B)
        ):
            self.close_b(at, event.q850_cause, event.sip_code)
            if s.state is S.BRIDGED:
                self.go(S.COMPLETED, "destination_hangup")
                self.hang_up_a()  # the dialplan would keep leg A in silence after Dial() returns
            return self.done()
        return self.out

    def command_failed(self, event: CommandFailed) -> Step:
        s, a, b = self.s, self.s.a, self.s.b
        if a is not None and event.command_id == a.command_id and s.state is S.ORIGINATING_A:
            if event.outcome_unknown:
                log.warning("callback %s: originate %s may have reached the PBX (%s); waiting for its "
                            "result", s.callback_id, event.command_id, event.error)
                return self.out
            return self.a_failed(Disposition.FAILED, 38, self.now, "originate_failed")
        if b is not None and event.command_id == b.command_id and s.state is S.DIALING_B:
            self.close_b(self.now, 38, disposition=Disposition.FAILED)
            return self.play_and_end(S.FAILED_B, "dial_b_failed")
        log.info("callback %s: command %s failed: %s", s.callback_id, event.command_id, event.error)
        return self.out


#: what each input does to a session that exists
_HANDLERS: dict[type, Any] = {
    TimerTick: _Stepper.tick,
    AdmissionVerdict: _Stepper.verdict,
    OriginateResult: _Stepper.originate_result,
    IvrInput: _Stepper.ivr_input,
    DialResult: _Stepper.dial_result,
    ChannelHangup: _Stepper.hangup,
    CommandFailed: _Stepper.command_failed,
}


def _disposition_for_cause(cause: int) -> Disposition:
    if cause == 17:
        return Disposition.BUSY
    if cause in (18, 19):
        return Disposition.NO_ANSWER
    if cause in (34, 42):
        return Disposition.CONGESTION
    return Disposition.FAILED


def remember(applied: tuple[str, ...], input_id: str) -> tuple[str, ...]:
    """The session's applied-input ids with ``input_id`` added, bounded to the last few."""
    return (*applied, input_id)[-APPLIED_MEMORY:]
