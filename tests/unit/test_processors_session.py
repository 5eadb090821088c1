"""``processors.session.step``, input by input: transitions, PBX commands, finished legs, guard
requests and the session's one timer, for every path of the callback state machine. Pure."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from callback.settings import SessionTimeouts
from processors.session import step
from producers.action_ids import channel_id_for
from schemas.callback import (
    TERMINAL_STATES,
    Disposition,
    FinishedLeg,
    LegType,
    Payer,
    PayerKind,
    SessionState,
    command_id_for,
    leg_id_for,
)
from schemas.control import AdmissionRequest, SessionReleased, TimerKind, TimerTick
from schemas.pbx_commands import DialLegB, Hangup, Originate, Redirect
from schemas.pbx_events import (
    ChannelAnswered,
    DialStatus,
    IvrInput,
    IvrPrompt,
    OriginateOutcome,
    OriginateResult,
)
from tests.unit.processors_helpers import (
    ALICE_ANI,
    ALICE_PIN,
    CARD,
    DID_ANI,
    DID_ANI_PIN,
    DID_CARD_NUMBER,
    DID_PIN,
    OWNER,
    PINLESS_ANI,
    PINLESS_CARD,
    RETAIL_RATES,
    SERVER_ID,
    SPAIN,
    STRANGER_ANI,
    T0,
    UK,
    UK_ANI,
    Call,
    at,
    base_settings,
    did_initiation,
    longest_affordable,
    make_ref,
    web_initiation,
)

S = SessionState
TIMEOUTS = SessionTimeouts()
CB = "cb1"
CALLBACK_USER = Payer(kind=PayerKind.CALLBACK_USER, id=OWNER)
ALICE = Payer(kind=PayerKind.USER, id="alice")
A_CHANNEL = "PJSIP/trunk-a1"  # what Call.originate_result reports as leg A's channel
INIT_CHANNEL = "PJSIP/carrier-00000001"


def secs(n: float) -> timedelta:
    return timedelta(seconds=n)


# --- getting a session to a state -----------------------------------------------------------------


def requested(did: str = DID_PIN, ani: str | None = ALICE_ANI, settings=None, ref=None, **kw) -> Call:
    call = Call(ref if ref is not None else make_ref(settings), **kw)
    call.feed(did_initiation(did, ani, callback_id=CB), T0)
    return call


def originating(did: str = DID_PIN, ani: str | None = ALICE_ANI, settings=None, ref=None, **kw) -> Call:
    """Admitted at T0+0.1 with initiation_ring_s = 0: leg A attempt 1 is ringing."""
    call = requested(did, ani, settings, ref, **kw)
    call.verdict(True, at(0.1))
    assert call.s.state is S.ORIGINATING_A
    return call


def answered(did: str = DID_PIN, ani: str | None = ALICE_ANI, settings=None, ref=None, **kw) -> Call:
    """Leg A answered at T0+6."""
    call = originating(did, ani, settings, ref, **kw)
    call.answer(at(6))
    return call


def awaiting_destination(settings=None, ref=None) -> Call:
    """Device PIN plan, alice's PIN keyed at T0+9."""
    call = answered(settings=settings, ref=ref)
    call.keys(IvrPrompt.PIN, ALICE_PIN, at(9))
    assert call.s.state is S.AWAITING_DESTINATION
    return call


def dialing(settings=None, ref=None, destination: str = SPAIN) -> Call:
    """Destination keyed at T0+12."""
    call = awaiting_destination(settings, ref)
    call.keys(IvrPrompt.DESTINATION, destination, at(12))
    assert call.s.state is S.DIALING_B
    return call


def bridged(settings=None, ref=None) -> Call:
    """Leg B answered at T0+20."""
    call = dialing(settings, ref)
    call.dial(DialStatus.ANSWER, at(20))
    assert call.s.state is S.BRIDGED
    return call


def only(items, cls=None):
    assert len(items) == 1, items
    if cls is not None:
        assert isinstance(items[0], cls), items[0]
    return items[0]


def moves(st) -> list[tuple[SessionState | None, SessionState]]:
    return [(t.from_state, t.to_state) for t in st.transitions]


def assert_history_consistent(call: Call) -> None:
    """Sequences 1, 2, 3 ...; each transition starts where the previous one ended."""
    transitions = call.transitions
    assert [t.sequence for t in transitions] == list(range(1, len(transitions) + 1))
    assert transitions[0].from_state is None
    for before, after in zip(transitions, transitions[1:], strict=False):
        assert after.from_state is before.to_state
    assert [t.event_id for t in transitions] == [f"{CB}:transition:{t.sequence}" for t in transitions]


def assert_leg_times_valid(leg: FinishedLeg) -> None:
    assert leg.started_at <= leg.ended_at
    if leg.answered_at is not None:
        assert leg.started_at <= leg.answered_at <= leg.ended_at


def cmd_id(leg: LegType, attempt: int, kind: str) -> str:
    return command_id_for(CB, leg, attempt, kind)


def assert_unchanged(call: Call, before, st) -> None:
    assert st.session is before
    assert (st.transitions, st.commands, st.legs, st.admissions) == ([], [], [], [])
    assert not st.delete
    assert call.session is before


# === the initiation ===============================================================================


def test_refused_initiation_is_rejected_and_dropped_with_the_dialplans_cause():
    call = Call(make_ref())
    st = call.feed(did_initiation(DID_PIN, UK_ANI, callback_id=CB), T0)
    assert moves(st) == [(None, S.REQUESTED), (S.REQUESTED, S.REJECTED)]
    assert [t.sequence for t in st.transitions] == [1, 2]
    assert st.reason == "origin_not_allowed"
    hangup = only(st.commands, Hangup)
    assert hangup.command_id == cmd_id(LegType.INITIATION, 0, "hangup")
    assert (hangup.server_id, hangup.channel, hangup.cause) == (SERVER_ID, INIT_CHANNEL, 17)
    assert st.legs == [] and st.admissions == []
    # the outcome is known; the session waits only for the initiation's hangup
    assert call.s.initiation_open
    assert (call.s.due_kind, call.s.due_at) == (TimerKind.WATCHDOG, T0 + secs(TIMEOUTS.closing_s))


def test_refused_initiation_leg_is_published_when_its_hangup_arrives_paid_by_the_callback_user():
    call = Call(make_ref())
    call.feed(did_initiation(DID_PIN, UK_ANI, callback_id=CB), T0)
    st = call.hangup_initiation(at(2), 17, occurred_at=at(1.5))
    leg = only(st.legs)
    assert leg.leg_id == leg_id_for(CB, LegType.INITIATION, 0)
    assert (leg.leg, leg.attempt, leg.payer) == (LegType.INITIATION, 0, CALLBACK_USER)
    assert (leg.disposition, leg.q850_cause, leg.sip_code) == (Disposition.BUSY, 17, 486)
    assert (leg.started_at, leg.answered_at, leg.ended_at) == (T0, None, at(1.5))
    assert (leg.dst, leg.src, leg.did, leg.pbx_id) == (UK_ANI, UK_ANI, DID_PIN, SERVER_ID)
    assert leg.final_state is S.REJECTED
    assert st.transitions == [] and st.admissions == []  # never guarded: nothing to release
    assert call.s.closed_at == at(2)
    assert (call.s.due_kind, call.s.due_at) == (TimerKind.EXPIRE, at(2) + secs(TIMEOUTS.retention_s))


def test_refusal_of_a_did_without_dialplan_drops_with_cause_1():
    call = Call(make_ref())
    st = call.feed(did_initiation("2349111111111", ALICE_ANI, callback_id=CB), T0)
    assert st.reason == "unknown_did"
    assert only(st.commands, Hangup).cause == 1
    # the system settings still name the Callback User: the dropped call is on record for analysts
    st = call.hangup_initiation(at(1), cause=1)
    leg = only(st.legs)
    assert (leg.payer, leg.q850_cause, leg.final_state) == (CALLBACK_USER, 1, S.REJECTED)


def test_accepted_initiation_asks_the_guard_and_waits_for_its_verdict():
    call = Call(make_ref())
    st = call.feed(did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), T0 + secs(0.05))
    assert moves(st) == [(None, S.REQUESTED)]
    assert st.commands == [] and st.legs == []  # the initiation keeps ringing until admitted
    request = only(st.admissions, AdmissionRequest)
    assert (request.callback_id, request.number, request.did, request.received_at) == (
        CB,
        ALICE_ANI,
        DID_PIN,
        T0,
    )
    assert (request.per_number_per_minute, request.per_did_per_minute, request.one_live_session) == (
        3,
        600,
        True,
    )
    assert request.event_id == f"admission:{CB}"
    assert (call.s.due_kind, call.s.due_at, call.s.timer_seq) == (
        TimerKind.WATCHDOG,
        T0 + secs(0.05 + TIMEOUTS.admission_s),
        1,
    )


def test_admitted_without_ring_drops_the_initiation_and_originates_at_once():
    call = requested()
    st = call.verdict(True, at(0.1))
    assert moves(st) == [(S.REQUESTED, S.SCHEDULED), (S.SCHEDULED, S.ORIGINATING_A)]
    assert [t.sequence for t in st.transitions] == [2, 3]
    assert st.transitions[0].due_at == at(0.1) and st.transitions[0].attempt == 1
    hangup, originate = st.commands
    assert isinstance(hangup, Hangup) and isinstance(originate, Originate)
    assert hangup.command_id == cmd_id(LegType.INITIATION, 0, "hangup") and hangup.cause == 17
    assert originate.command_id == cmd_id(LegType.A, 1, "originate")
    assert originate.event_id == originate.command_id
    assert (originate.server_id, originate.leg, originate.attempt) == (SERVER_ID, LegType.A, 1)
    assert originate.number == ALICE_ANI
    assert originate.channel == f"PJSIP/{ALICE_ANI}@trunk"
    assert (originate.context, originate.exten) == ("t-answered", "go")
    assert originate.caller_id_num == "18005550100"  # no device known, no source CID: the default CID
    assert originate.timeout_ms == 25_000  # Wait Time
    s = call.s
    assert s.a is not None and s.a.uniqueid == channel_id_for(originate.command_id)
    assert s.a.started_at == at(0.1)
    assert (s.due_kind, s.due_at, s.timer_seq) == (
        TimerKind.WATCHDOG,
        at(0.1 + 25 + TIMEOUTS.originate_margin_s),
        2,
    )


def test_admitted_with_ring_time_waits_until_received_at_plus_ring():
    call = requested(settings=base_settings(initiation_ring_s=4))
    st = call.verdict(True, at(0.5))
    assert moves(st) == [(S.REQUESTED, S.SCHEDULED)]
    assert st.transitions[0].due_at == at(4)
    assert st.commands == []  # the initiation keeps ringing
    assert (call.s.due_kind, call.s.due_at, call.s.timer_seq) == (TimerKind.ATTEMPT, at(4), 2)
    st = call.tick()
    assert moves(st) == [(S.SCHEDULED, S.ORIGINATING_A)]
    assert [type(c) for c in st.commands] == [Hangup, Originate]
    assert call.s.initiation_dropped_at == at(4)


def test_verdict_after_the_ring_time_originates_at_once():
    call = requested(settings=base_settings(initiation_ring_s=4))
    st = call.verdict(True, at(7))
    assert moves(st)[-1] == (S.SCHEDULED, S.ORIGINATING_A)
    assert [type(c) for c in st.commands] == [Hangup, Originate]


def test_refused_verdict_rejects_and_drops_the_initiation():
    call = requested()
    st = call.verdict(False, at(0.1), reason="fraud_ani_rate")
    assert moves(st) == [(S.REQUESTED, S.REJECTED)]
    assert st.reason == "fraud_ani_rate"
    assert only(st.commands, Hangup).cause == 17
    st = call.hangup_initiation(at(1))
    assert only(st.legs).payer == CALLBACK_USER
    assert st.admissions == []  # refused by the guard: nothing to release


def test_verdict_after_the_session_gave_up_releases_the_number():
    call = requested()
    st = call.tick()  # the admission watchdog
    assert st.reason == "admission_timeout"
    assert moves(st) == [(S.REQUESTED, S.REJECTED)]
    assert only(st.commands, Hangup).cause == 17
    st = call.verdict(True, at(31))
    assert st.transitions == [] and st.commands == []
    release = only(st.admissions, SessionReleased)
    assert (release.callback_id, release.number) == (CB, ALICE_ANI)


def test_late_refused_verdict_changes_nothing():
    call = requested()
    call.tick()
    st = call.verdict(False, at(31), reason="fraud_ani_rate")
    assert st.transitions == [] and st.admissions == [] and st.commands == []


def test_guards_switched_off_skip_the_admission():
    settings = base_settings(
        max_initiations_per_ani_per_minute=0,
        max_initiations_per_did_per_minute=0,
        one_live_session_per_ani=False,
    )
    call = Call(make_ref(settings))
    st = call.feed(did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), T0)
    assert st.admissions == []
    assert moves(st) == [(None, S.REQUESTED), (S.REQUESTED, S.SCHEDULED), (S.SCHEDULED, S.ORIGINATING_A)]
    assert not call.s.guarded
    # its end releases nothing
    call.originate_result(OriginateOutcome.BUSY, at(5))
    call.tick()
    call.originate_result(OriginateOutcome.BUSY, at(30))
    call.tick()
    st = call.originate_result(OriginateOutcome.BUSY, at(60))
    assert st.transitions[-1].to_state is S.FAILED_A
    call.hangup_initiation(at(61))
    assert call.s.closed_at == at(61)
    assert all(not call_st.admissions for call_st in call.steps)


def test_stale_initiation_is_rejected():
    call = Call(make_ref())
    late = T0 + secs(TIMEOUTS.max_initiation_age_s + 1)
    st = call.feed(did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), late)
    assert moves(st) == [(None, S.REQUESTED), (S.REQUESTED, S.REJECTED)]
    assert st.reason == "stale_initiation"
    assert st.admissions == []


def test_stale_initiation_is_dropped_with_the_dialplans_cause():
    # initiation docstring: every DID initiation is dropped with the dial plan's cause, accepted or not
    call = Call(make_ref())
    late = T0 + secs(TIMEOUTS.max_initiation_age_s + 1)
    st = call.feed(did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), late)
    assert only(st.commands, Hangup).cause == 17
    # and its initiation leg is published, paid by the Callback User, like any refused initiation's
    st = call.hangup_initiation(late + secs(1))
    assert only(st.legs).payer == CALLBACK_USER


def test_initiation_just_within_the_age_limit_is_decided():
    call = Call(make_ref())
    st = call.feed(
        did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), T0 + secs(TIMEOUTS.max_initiation_age_s)
    )
    assert st.reason == "" and len(st.admissions) == 1


def test_initiation_seen_before_is_ignored():
    call = originating()
    before = call.s
    st = call.feed(did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), at(1))
    assert_unchanged(call, before, st)


def test_event_of_an_unknown_callback_is_ignored():
    st = step(
        None,
        IvrInput(
            source="ami",
            pbx_id=SERVER_ID,
            callback_id="ghost",
            occurred_at=T0,
            prompt=IvrPrompt.PIN,
            digits="1234",
        ),
        Call(make_ref()).world,
        T0,
    )
    assert st.session is None and not st.delete
    assert st.outputs() == []


# === leg A ========================================================================================


@pytest.mark.parametrize(
    "outcome,disposition,cause",
    [
        (OriginateOutcome.BUSY, Disposition.BUSY, 17),
        (OriginateOutcome.NO_ANSWER, Disposition.NO_ANSWER, 19),
        (OriginateOutcome.CONGESTION, Disposition.CONGESTION, 34),
    ],
)
def test_unanswered_leg_a_is_published_and_retried_after_retry_time(outcome, disposition, cause):
    call = originating()
    st = call.originate_result(outcome, at(10))
    leg = only(st.legs)
    assert leg.leg_id == leg_id_for(CB, LegType.A, 1)
    assert (leg.leg, leg.attempt, leg.disposition, leg.q850_cause) == (LegType.A, 1, disposition, cause)
    assert (leg.started_at, leg.answered_at, leg.ended_at) == (at(0.1), None, at(10))
    assert leg.payer == CALLBACK_USER
    assert (leg.dst, leg.src, leg.pbx_id) == (ALICE_ANI, "18005550100", SERVER_ID)
    assert moves(st) == [(S.ORIGINATING_A, S.SCHEDULED)]
    transition = st.transitions[0]
    assert transition.reason == f"leg_a_{outcome.value}"
    assert (transition.attempt, transition.due_at) == (2, at(10 + 20))
    seq_before = call.steps[-2].session.timer_seq
    assert (call.s.due_kind, call.s.due_at, call.s.timer_seq) == (TimerKind.ATTEMPT, at(30), seq_before + 1)
    assert call.s.a is None
    st = call.tick()
    originate = only(st.commands, Originate)  # the initiation was dropped already: no second Hangup
    assert originate.attempt == 2
    assert originate.command_id == cmd_id(LegType.A, 2, "originate")
    assert call.s.a is not None and call.s.a.uniqueid == channel_id_for(originate.command_id)


def test_leg_a_is_tried_one_plus_max_retries_times_then_failed_a():
    call = originating(settings=base_settings(max_retries=2))
    for attempt, when in ((1, 5), (2, 30), (3, 55)):
        assert call.s.attempt == attempt
        st = call.originate_result(OriginateOutcome.NO_ANSWER, at(when))
        assert only(st.legs).attempt == attempt
        if attempt < 3:
            call.tick()
    assert moves(st) == [(S.ORIGINATING_A, S.FAILED_A)]
    assert st.reason == "leg_a_no_answer: no retries left"
    originates = [c for c in call.commands if isinstance(c, Originate)]
    assert [c.attempt for c in originates] == [1, 2, 3]
    assert len({c.command_id for c in originates}) == 3
    assert [leg.leg_id for leg in call.legs] == [leg_id_for(CB, LegType.A, n) for n in (1, 2, 3)]
    # failed, but the initiation leg is still open: only its hangup is waited for
    assert (call.s.due_kind, call.s.due_at) == (TimerKind.WATCHDOG, at(55) + secs(TIMEOUTS.closing_s))
    st = call.hangup_initiation(at(56))
    assert only(st.admissions, SessionReleased).number == ALICE_ANI
    assert_history_consistent(call)


def test_max_retries_zero_gives_one_attempt():
    call = originating(settings=base_settings(max_retries=0))
    st = call.originate_result(OriginateOutcome.BUSY, at(5))
    assert moves(st) == [(S.ORIGINATING_A, S.FAILED_A)]


def test_originate_command_failed_is_a_failed_attempt_and_retried():
    call = originating()
    st = call.command_failed(cmd_id(LegType.A, 1, "originate"), at(1))
    leg = only(st.legs)
    assert (leg.disposition, leg.q850_cause, leg.ended_at) == (Disposition.FAILED, 38, at(1))
    assert moves(st) == [(S.ORIGINATING_A, S.SCHEDULED)]
    assert st.reason == "originate_failed"
    assert call.s.attempt == 2 and call.s.due_kind is TimerKind.ATTEMPT


def test_originate_with_unknown_outcome_keeps_waiting_for_its_result():
    call = originating()
    before = call.s
    st = call.command_failed(cmd_id(LegType.A, 1, "originate"), at(1), outcome_unknown=True)
    assert_unchanged(call, before, st)
    st = call.answer(at(6))
    assert moves(st)[0] == (S.ORIGINATING_A, S.A_ANSWERED)


def test_command_failed_of_another_command_is_ignored():
    call = originating()
    before = call.s
    st = call.command_failed(cmd_id(LegType.A, 7, "originate"), at(1))
    assert_unchanged(call, before, st)


def test_originate_result_of_another_command_is_ignored():
    call = originating()
    before = call.s
    st = call.originate_result(OriginateOutcome.ANSWERED, at(6), command_id=cmd_id(LegType.A, 9, "originate"))
    assert_unchanged(call, before, st)


def test_originate_result_without_command_id_is_matched_by_leg_and_attempt():
    call = originating()
    before = call.s
    assert before.a is not None

    def result(attempt: int) -> OriginateResult:
        return OriginateResult(
            source="ami",
            pbx_id=SERVER_ID,
            callback_id=CB,
            leg=LegType.A,
            attempt=attempt,
            occurred_at=at(6),
            reason_code=4,
            outcome=OriginateOutcome.ANSWERED,
            channel=A_CHANNEL,
            uniqueid=before.a.uniqueid,
        )

    assert_unchanged(call, before, call.feed(result(2), at(6)))  # another attempt
    st = call.feed(result(1), at(6))
    assert moves(st)[0] == (S.ORIGINATING_A, S.A_ANSWERED)


def test_other_pbx_events_change_nothing():
    call = originating()
    before = call.s
    st = call.feed(ChannelAnswered(source="ami", pbx_id=SERVER_ID, callback_id=CB, occurred_at=at(3)), at(3))
    assert_unchanged(call, before, st)


# === authentication ===============================================================================


def test_answered_pin_callback_asks_the_pin():
    call = originating()
    st = call.answer(at(6))
    assert moves(st) == [(S.ORIGINATING_A, S.A_ANSWERED), (S.A_ANSWERED, S.AUTHENTICATING)]
    assert [t.sequence for t in st.transitions] == [4, 5]
    assert all(t.payer == CALLBACK_USER for t in st.transitions)  # nobody recognised yet
    redirect = only(st.commands, Redirect)
    assert redirect.command_id == cmd_id(LegType.A, 1, "redirect.pin_prompt.1")
    assert (redirect.server_id, redirect.channel, redirect.context, redirect.exten, redirect.purpose) == (
        SERVER_ID,
        A_CHANNEL,
        "t-pin",
        "s",
        "pin_prompt",
    )
    assert st.legs == []
    assert (call.s.due_kind, call.s.due_at) == (TimerKind.WATCHDOG, at(6 + TIMEOUTS.ivr_s))


def test_card_number_pin_asks_the_card_number_then_the_pin():
    call = answered(DID_CARD_NUMBER, STRANGER_ANI)
    redirect = only(call.steps[-1].commands, Redirect)
    assert (redirect.context, redirect.purpose) == ("t-card-number", "card_number_prompt")
    st = call.keys(IvrPrompt.CARD_NUMBER, CARD, at(8))
    assert st.transitions == []
    redirect = only(st.commands, Redirect)
    assert (redirect.context, redirect.purpose) == ("t-pin", "pin_prompt")
    assert redirect.command_id == cmd_id(LegType.A, 1, "redirect.pin_prompt.2")
    st = call.keys(IvrPrompt.PIN, "1111", at(10))
    assert moves(st) == [(S.AUTHENTICATING, S.AWAITING_DESTINATION)]
    assert st.transitions[0].payer == Payer(kind=PayerKind.CARD, id=CARD)


def test_card_number_pin_wrong_pin_starts_again_at_the_card_number():
    call = answered(DID_CARD_NUMBER, STRANGER_ANI)
    call.keys(IvrPrompt.CARD_NUMBER, CARD, at(8))
    st = call.keys(IvrPrompt.PIN, "2222", at(10))
    assert only(st.commands, Redirect).purpose == "card_number_prompt"
    assert call.s.wrong_entries == 1


def test_wrong_pin_below_pin_attempts_asks_again_with_a_new_command_id():
    call = answered()
    first = only(call.steps[-1].commands, Redirect)
    st = call.keys(IvrPrompt.PIN, "0000", at(8))
    assert st.transitions == [] and st.legs == []
    again = only(st.commands, Redirect)
    assert (again.context, again.purpose) == ("t-pin", "pin_prompt")
    assert again.command_id == cmd_id(LegType.A, 1, "redirect.pin_prompt.2") != first.command_id
    assert call.s.wrong_entries == 1 and call.s.state is S.AUTHENTICATING
    assert call.s.due_at == at(8 + TIMEOUTS.ivr_s)  # the IVR watchdog starts again


def test_pin_attempts_wrong_entries_play_the_failed_ivr():
    call = answered()
    for when in (8, 10):
        st = call.keys(IvrPrompt.PIN, "0000", at(when))
        assert only(st.commands, Redirect).purpose == "pin_prompt"
    st = call.keys(IvrPrompt.PIN, "", at(12))  # an empty entry counts as wrong
    assert moves(st) == [(S.AUTHENTICATING, S.AUTH_FAILED)]
    assert st.reason == "no_pin_entered: 3 wrong entries"
    redirect = only(st.commands, Redirect)
    assert redirect.command_id == cmd_id(LegType.A, 1, "redirect.failed_ivr.4")
    assert (redirect.context, redirect.exten, redirect.purpose) == (
        "t-failed-ivr",
        "failed-announcement",
        "failed_ivr",
    )
    assert st.legs == []  # leg A is still up, playing the IVR
    st = call.hangup_a(at(20))
    leg = only(st.legs)
    assert leg.payer == CALLBACK_USER  # seed: the owner pays an answered, unauthenticated leg A
    assert (leg.disposition, leg.answered_at, leg.ended_at) == (Disposition.ANSWERED, at(6), at(20))
    assert leg.final_state is S.AUTH_FAILED


def test_pin_attempts_setting_is_honoured():
    call = answered(settings=base_settings(pin_attempts=1))
    st = call.keys(IvrPrompt.PIN, "0000", at(8))
    assert moves(st) == [(S.AUTHENTICATING, S.AUTH_FAILED)]


def test_without_failed_ivr_leg_a_is_hung_up():
    call = answered(settings=base_settings(failed_ivr=None, pin_attempts=1))
    st = call.keys(IvrPrompt.PIN, "0000", at(8))
    hangup = only(st.commands, Hangup)
    assert hangup.command_id == cmd_id(LegType.A, 1, "hangup")
    assert (hangup.channel, hangup.cause) == (A_CHANNEL, 16)
    assert st.transitions[-1].to_state is S.AUTH_FAILED


def test_right_pin_asks_the_destination_and_the_user_pays_leg_a_from_now():
    call = answered()
    call.keys(IvrPrompt.PIN, "0000", at(8))
    st = call.keys(IvrPrompt.PIN, ALICE_PIN + "#", at(10))
    assert moves(st) == [(S.AUTHENTICATING, S.AWAITING_DESTINATION)]
    assert st.transitions[0].payer == ALICE
    redirect = only(st.commands, Redirect)
    assert redirect.command_id == cmd_id(LegType.A, 1, "redirect.destination_prompt.3")
    assert (redirect.context, redirect.purpose) == ("t-destination", "destination_prompt")
    assert call.s.wrong_entries == 0 and call.s.prompt is IvrPrompt.DESTINATION


def test_ivr_input_of_another_channel_or_prompt_is_ignored():
    call = answered()
    before = call.s
    assert_unchanged(call, before, call.keys(IvrPrompt.PIN, ALICE_PIN, at(8), uniqueid="some-other-channel"))
    assert_unchanged(call, before, call.keys(IvrPrompt.DESTINATION, SPAIN, at(8)))


def test_ani_callback_asks_no_pin():
    call = originating(DID_ANI, ALICE_ANI)
    st = call.answer(at(6))
    assert moves(st) == [(S.ORIGINATING_A, S.A_ANSWERED), (S.A_ANSWERED, S.AWAITING_DESTINATION)]
    assert all(t.payer == ALICE for t in st.transitions)
    assert only(st.commands, Redirect).purpose == "destination_prompt"


def test_ani_then_pin_asks_the_pin_of_the_recognised_device():
    call = originating(DID_ANI_PIN, ALICE_ANI)
    st = call.answer(at(6))
    assert st.transitions[-1].to_state is S.AUTHENTICATING
    assert st.transitions[-1].payer == CALLBACK_USER  # not authenticated yet
    st = call.keys(IvrPrompt.PIN, "6666", at(8))  # another user's device PIN
    assert st.transitions == [] and call.s.wrong_entries == 1
    st = call.keys(IvrPrompt.PIN, ALICE_PIN, at(10))
    assert moves(st) == [(S.AUTHENTICATING, S.AWAITING_DESTINATION)]
    assert st.transitions[0].payer == ALICE


def test_ani_then_pin_caller_pays_the_initiation_even_when_the_pin_fails():
    call = originating(DID_ANI_PIN, ALICE_ANI, settings=base_settings(pin_attempts=1))
    call.answer(at(6))
    call.keys(IvrPrompt.PIN, "0000", at(8))
    leg_a = only(call.hangup_a(at(12)).legs)
    assert leg_a.payer == CALLBACK_USER
    initiation = only(call.hangup_initiation(at(13)).legs)
    assert initiation.payer == ALICE  # seed: recognised by ANI/PIN, charged for the initiation


def test_pinless_card_pays_everything_and_asks_no_pin():
    call = originating(DID_CARD_NUMBER, PINLESS_ANI)
    st = call.answer(at(6))
    assert st.transitions[-1].to_state is S.AWAITING_DESTINATION
    card = Payer(kind=PayerKind.CARD, id=PINLESS_CARD)
    assert st.transitions[-1].payer == card
    call.hangup_a(at(9))
    assert [leg.payer for leg in call.legs] == [card]
    assert only(call.hangup_initiation(at(10)).legs).payer == card


# === leg B ========================================================================================


def test_destination_is_dialled_with_the_limit_the_balance_pays_for():
    call = awaiting_destination()
    st = call.keys(IvrPrompt.DESTINATION, SPAIN + "#", at(12))
    # alice: 25.00; leg B to Spain at 0.08/min (1 s increment) while leg A to 2348... runs at 0.22/min in
    # 60 s blocks, answered 6 s before the destination was keyed
    expected = longest_affordable(Decimal("25.00"), RETAIL_RATES["34"], RETAIL_RATES["2348"], 6)
    # by hand: T = 4974 s of B (6.632) + 6 + 4974 = 4980 s = 83 blocks of A (18.26) = 24.892 <= 25.00;
    # one second more needs an 84th block of A: 6.6333 + 18.48 > 25.00
    assert expected == 4974
    assert Decimal("0.08") * 4974 / 60 + Decimal("0.22") * 83 <= Decimal("25.00")
    assert Decimal("0.08") * 4975 / 60 + Decimal("0.22") * 84 > Decimal("25.00")
    dial = only(st.commands, DialLegB)
    assert dial.max_duration_s == expected
    assert dial.command_id == cmd_id(LegType.B, 1, "dial_b")
    assert (dial.server_id, dial.a_channel, dial.number, dial.context) == (
        SERVER_ID,
        A_CHANNEL,
        SPAIN,
        "t-dial-b",
    )
    assert (dial.timeout_s, dial.attempt) == (25, 1)
    assert dial.caller_id_num == "18005550100"
    assert moves(st) == [(S.AWAITING_DESTINATION, S.DIALING_B)]
    assert st.transitions[0].reason == f"max_duration_s={expected}"
    assert st.transitions[0].destination == SPAIN
    assert (call.s.due_kind, call.s.due_at) == (TimerKind.WATCHDOG, at(12 + 25 + TIMEOUTS.dial_margin_s))


def test_dial_caller_id_is_the_device_cid_with_send_device_cid():
    call = dialing(settings=base_settings(send_device_cid=True))
    assert only(call.steps[-1].commands, DialLegB).caller_id_num == "2348031230000"


def test_ani_callback_presents_the_device_cid_on_leg_a_with_send_device_cid():
    call = originating(DID_ANI, ALICE_ANI, settings=base_settings(send_device_cid=True))
    assert [c for c in call.commands if isinstance(c, Originate)][0].caller_id_num == "2348031230000"


def test_destination_without_rate_plays_the_failed_ivr():
    call = awaiting_destination()
    st = call.keys(IvrPrompt.DESTINATION, "99912345", at(12))
    assert moves(st) == [(S.AWAITING_DESTINATION, S.FAILED_B)]
    assert st.reason == "no_rate_for_destination"
    redirect = only(st.commands, Redirect)
    assert (redirect.context, redirect.exten, redirect.purpose) == (
        "t-failed-ivr",
        "failed-announcement",
        "failed_ivr",
    )
    assert call.s.due_kind is TimerKind.WATCHDOG  # waits for leg A's hangup


def test_destination_the_balance_cannot_pay_fails_b():
    call = answered(ani="2348000000007")  # poor: 0.001
    call.keys(IvrPrompt.PIN, "7777", at(9))
    st = call.keys(IvrPrompt.DESTINATION, SPAIN, at(12))
    assert moves(st) == [(S.AWAITING_DESTINATION, S.FAILED_B)]
    assert st.reason == "insufficient_balance"
    assert only(st.commands, Redirect).purpose == "failed_ivr"


def test_destination_that_is_not_a_number_is_a_wrong_entry():
    call = awaiting_destination()
    st = call.keys(IvrPrompt.DESTINATION, "*", at(12))
    assert st.transitions == []
    assert only(st.commands, Redirect).purpose == "destination_prompt"


def test_web_callback_with_destination_dials_b_right_after_answer():
    call = Call(make_ref())
    st = call.feed(web_initiation("alice", ALICE_ANI, UK, callback_id=CB), T0)
    request = only(st.admissions, AdmissionRequest)
    assert (request.number, request.did) == (ALICE_ANI, None)
    st = call.verdict(True, at(0.1))
    originate = only(st.commands, Originate)  # no initiation call to drop
    assert originate.number == ALICE_ANI
    st = call.answer(at(6))
    assert moves(st) == [(S.ORIGINATING_A, S.A_ANSWERED), (S.A_ANSWERED, S.DIALING_B)]
    assert all(t.payer == ALICE for t in st.transitions)
    dial = only(st.commands, DialLegB)
    # leg A to 2348... at 0.22/min in 60 s blocks, answered just now; B to the UK at 0.03/min
    expected = longest_affordable(Decimal("25.00"), RETAIL_RATES["44"], RETAIL_RATES["2348"], 0)
    assert (dial.number, dial.max_duration_s) == (UK, expected)


def test_web_callback_without_destination_asks_for_it():
    call = Call(make_ref())
    call.feed(web_initiation("alice", ALICE_ANI, callback_id=CB), T0)
    call.verdict(True, at(0.1))
    st = call.answer(at(6))
    assert moves(st)[-1] == (S.A_ANSWERED, S.AWAITING_DESTINATION)
    assert only(st.commands, Redirect).purpose == "destination_prompt"


def test_dial_answer_bridges_and_b_hangup_completes_with_both_legs():
    call = dialing()
    limit = call.s.b.max_duration_s
    st = call.dial(DialStatus.ANSWER, at(20))
    assert moves(st) == [(S.DIALING_B, S.BRIDGED)]
    assert st.commands == [] and st.legs == []
    assert (call.s.due_kind, call.s.due_at) == (
        TimerKind.WATCHDOG,
        at(20 + limit + TIMEOUTS.bridged_margin_s),
    )
    st = call.hangup("b-uid-1", LegType.B, at(80))
    assert moves(st) == [(S.BRIDGED, S.COMPLETED)]
    assert st.reason == "destination_hangup"
    hangup = only(st.commands, Hangup)
    assert (hangup.command_id, hangup.channel, hangup.cause) == (
        cmd_id(LegType.A, 1, "hangup"),
        A_CHANNEL,
        16,
    )
    leg_b = only(st.legs)
    assert leg_b.leg_id == leg_id_for(CB, LegType.B, 1)
    assert (leg_b.leg, leg_b.attempt, leg_b.dst, leg_b.payer) == (LegType.B, 1, SPAIN, ALICE)
    assert leg_b.final_state is S.COMPLETED  # its end completed the callback in the same step
    assert (leg_b.started_at, leg_b.answered_at, leg_b.ended_at) == (at(12), at(20), at(80))
    assert (leg_b.disposition, leg_b.q850_cause, leg_b.sip_code) == (Disposition.ANSWERED, 16, None)
    assert st.admissions == []  # leg A and the initiation are still open
    st = call.hangup_a(at(80.5))
    leg_a = only(st.legs)
    assert leg_a.leg_id == leg_id_for(CB, LegType.A, 1)
    assert leg_a.payer == ALICE  # recognised by PIN: the user pays leg A (seed)
    assert (leg_a.started_at, leg_a.answered_at, leg_a.ended_at) == (at(0.1), at(6), at(80.5))
    st = call.hangup_initiation(at(81), occurred_at=at(0.2))
    initiation = only(st.legs)
    assert initiation.payer == CALLBACK_USER  # PIN plan: not recognised at the initiation
    assert (initiation.started_at, initiation.ended_at) == (T0, at(0.2))
    assert only(st.admissions, SessionReleased).number == ALICE_ANI
    assert call.s.closed_at == at(81)
    assert_history_consistent(call)
    assert call.states() == [
        "requested",
        "scheduled",
        "originating_a",
        "a_answered",
        "authenticating",
        "awaiting_destination",
        "dialing_b",
        "bridged",
        "completed",
    ]
    for leg in call.legs:
        assert_leg_times_valid(leg)


def test_leg_a_hangup_while_bridged_completes():
    call = bridged()
    st = call.hangup_a(at(70))
    assert moves(st) == [(S.BRIDGED, S.COMPLETED)]
    assert st.reason == "caller_hangup"
    assert st.commands == []  # leg A is gone already
    assert only(st.legs).leg is LegType.A
    st = call.hangup("b-uid-1", LegType.B, at(70.2))
    assert only(st.legs).leg is LegType.B
    assert st.transitions == []


def test_dial_busy_plays_the_busy_ivr():
    call = dialing()
    st = call.dial(DialStatus.BUSY, at(15))
    leg_b = only(st.legs)
    assert (leg_b.disposition, leg_b.q850_cause, leg_b.sip_code) == (Disposition.BUSY, 17, 486)
    assert (leg_b.answered_at, leg_b.ended_at, leg_b.payer) == (None, at(15), ALICE)
    redirect = only(st.commands, Redirect)
    assert (redirect.context, redirect.exten, redirect.purpose) == (
        "t-busy-ivr",
        "busy-announcement",
        "busy_ivr",
    )
    assert moves(st) == [(S.DIALING_B, S.FAILED_B)]
    assert st.reason == "destination_busy"


def test_dial_busy_without_busy_ivr_hangs_leg_a_up_with_busy():
    call = dialing(settings=base_settings(busy_ivr=None))
    st = call.dial(DialStatus.BUSY, at(15))
    hangup = only(st.commands, Hangup)
    assert (hangup.channel, hangup.cause) == (A_CHANNEL, 17)


def test_dial_chanunavail_plays_the_failed_ivr():
    call = dialing()
    st = call.dial(DialStatus.CHANUNAVAIL, at(15))
    leg_b = only(st.legs)
    assert (leg_b.disposition, leg_b.q850_cause) == (Disposition.FAILED, 20)
    assert only(st.commands, Redirect).purpose == "failed_ivr"
    assert st.reason == "destination_chanunavail"
    assert st.transitions[-1].to_state is S.FAILED_B


def test_dial_b_command_failed_plays_the_failed_ivr():
    call = dialing()
    st = call.command_failed(cmd_id(LegType.B, 1, "dial_b"), at(13))
    assert (only(st.legs).disposition, st.legs[0].q850_cause) == (Disposition.FAILED, 38)
    assert st.reason == "dial_b_failed"


# === the caller hangs up ==========================================================================


def test_caller_hangup_while_authenticating_is_auth_failed():
    call = answered()
    st = call.hangup_a(at(8))
    assert moves(st) == [(S.AUTHENTICATING, S.AUTH_FAILED)]
    assert st.reason == "caller_hangup"
    assert only(st.legs).payer == CALLBACK_USER
    assert st.commands == []


def test_caller_hangup_while_awaiting_destination_is_failed_b():
    call = awaiting_destination()
    st = call.hangup_a(at(11))
    assert moves(st) == [(S.AWAITING_DESTINATION, S.FAILED_B)]
    assert only(st.legs).payer == ALICE


def test_caller_hangup_while_dialing_ends_both_legs_as_failed_b():
    call = dialing()
    st = call.hangup_a(at(14), cause=16)
    assert moves(st) == [(S.DIALING_B, S.FAILED_B)]
    assert st.reason == "caller_hangup"
    leg_a, leg_b = st.legs
    assert (leg_a.leg, leg_b.leg) == (LegType.A, LegType.B)
    assert (leg_b.disposition, leg_b.answered_at, leg_b.ended_at) == (Disposition.NO_ANSWER, None, at(14))


def test_a_hangup_of_another_channel_is_ignored():
    call = bridged()
    before = call.s
    assert_unchanged(call, before, call.hangup("not-our-channel", LegType.A, at(30)))


# === watchdogs ====================================================================================


def test_watchdog_while_originating_counts_as_no_answer():
    call = originating()
    due = call.s.due_at
    st = call.tick()
    leg = only(st.legs)
    assert (leg.disposition, leg.q850_cause, leg.ended_at) == (Disposition.NO_ANSWER, 19, due)
    assert moves(st) == [(S.ORIGINATING_A, S.SCHEDULED)]
    assert st.reason == "no_originate_result"


def test_watchdog_while_authenticating_hangs_up_then_closes_leg_a_at_the_watchdog_time():
    call = answered()
    st = call.tick()
    assert moves(st) == [(S.AUTHENTICATING, S.AUTH_FAILED)]
    assert st.reason == "ivr_timeout"
    assert only(st.commands, Hangup).channel == A_CHANNEL
    assert st.legs == []
    closing_at = call.s.due_at
    assert closing_at == at(6 + TIMEOUTS.ivr_s + TIMEOUTS.closing_s)
    st = call.tick()  # the hangups of leg A and of the initiation never came
    by_leg = {leg.leg: leg for leg in st.legs}
    assert set(by_leg) == {LegType.A, LegType.INITIATION}
    leg = by_leg[LegType.A]
    assert (leg.answered_at, leg.ended_at, leg.q850_cause, leg.payer) == (
        at(6),
        closing_at,
        16,
        CALLBACK_USER,
    )
    assert by_leg[LegType.INITIATION].ended_at == at(0.1)  # when its Hangup was sent
    assert st.transitions == []


def test_watchdog_while_awaiting_destination_is_failed_b():
    call = awaiting_destination()
    st = call.tick()
    assert moves(st) == [(S.AWAITING_DESTINATION, S.FAILED_B)]
    assert st.reason == "ivr_timeout"
    assert only(st.commands, Hangup).channel == A_CHANNEL


def test_watchdog_while_dialing_ends_leg_b_unanswered():
    call = dialing()
    due = call.s.due_at
    st = call.tick()
    assert moves(st) == [(S.DIALING_B, S.FAILED_B)]
    assert st.reason == "dial_timeout"
    assert only(st.commands, Hangup).channel == A_CHANNEL
    leg_b = only(st.legs)
    assert (leg_b.leg, leg_b.disposition, leg_b.q850_cause, leg_b.ended_at) == (
        LegType.B,
        Disposition.NO_ANSWER,
        19,
        due,
    )


def test_watchdog_while_bridged_ends_both_legs_at_leg_bs_limit_and_then_the_initiation():
    """The hangups never came: the PBX cut the call at leg B's limit at the latest, so neither leg
    is billed past what the balance was checked for (not until the watchdog fired)."""
    call = bridged()
    limit = call.s.b.max_duration_s
    fired_at = call.s.due_at
    st = call.tick()
    assert moves(st) == [(S.BRIDGED, S.COMPLETED)]
    assert st.reason == "watchdog"
    assert only(st.commands, Hangup).channel == A_CHANNEL
    by_leg = {leg.leg: leg for leg in st.legs}
    assert set(by_leg) == {LegType.A, LegType.B}
    cut = at(20) + secs(limit)  # leg B was answered at 20 s
    assert cut < fired_at
    assert by_leg[LegType.A].ended_at == cut and by_leg[LegType.B].ended_at == cut
    assert by_leg[LegType.B].answered_at == at(20)
    assert {leg.final_state for leg in st.legs} == {S.COMPLETED}
    st = call.tick()  # the initiation's hangup never came either
    initiation = only(st.legs)
    # the initiation call ended when it was dropped (its Hangup was sent at T0+0.1)
    assert (initiation.leg, initiation.ended_at) == (LegType.INITIATION, at(0.1))
    assert only(st.admissions, SessionReleased).number == ALICE_ANI
    assert call.s.due_kind is TimerKind.EXPIRE
    for leg in call.legs:
        assert_leg_times_valid(leg)


def test_closing_watchdog_hangs_up_a_leg_a_still_up_and_publishes_it():
    call = answered(settings=base_settings(pin_attempts=1))
    call.keys(IvrPrompt.PIN, "0000", at(8))  # one wrong PIN: the Failed IVR plays
    assert call.s.state is S.AUTH_FAILED
    st = call.tick()  # nothing came after the Failed IVR (nor the initiation's hangup)
    assert only(st.commands, Hangup).channel == A_CHANNEL
    legs = {leg.leg: leg for leg in st.legs}
    assert set(legs) == {LegType.A, LegType.INITIATION}
    assert legs[LegType.A].payer == CALLBACK_USER  # never authenticated: the owner pays


def test_rejected_session_whose_initiation_hangup_never_comes_closes_on_its_watchdog():
    call = Call(make_ref())
    call.feed(did_initiation(DID_PIN, UK_ANI, callback_id=CB), T0)
    st = call.tick()
    leg = only(st.legs)
    assert (leg.leg, leg.ended_at, leg.q850_cause) == (LegType.INITIATION, T0, 17)
    assert call.s.closed_at is not None and call.s.due_kind is TimerKind.EXPIRE


# === timers =======================================================================================


def test_stale_tick_changes_nothing():
    call = originating()
    s = call.s
    wrong_seq = TimerTick(
        source="timers", callback_id=CB, timer_seq=s.timer_seq - 1, kind=s.due_kind, due_at=s.due_at
    )
    assert_unchanged(call, s, call.feed(wrong_seq, s.due_at))
    wrong_kind = TimerTick(
        source="timers", callback_id=CB, timer_seq=s.timer_seq, kind=TimerKind.EXPIRE, due_at=s.due_at
    )
    assert_unchanged(call, s, call.feed(wrong_kind, s.due_at))


def test_a_tick_fires_its_timer_once():
    call = originating()
    s = call.s
    tick = TimerTick(source="timers", callback_id=CB, timer_seq=s.timer_seq, kind=s.due_kind, due_at=s.due_at)
    assert call.feed(tick, s.due_at).legs  # leg A attempt 1 given up
    after = call.s
    assert_unchanged(call, after, call.feed(tick, s.due_at + secs(1)))


def test_expiry_tick_deletes_the_session():
    call = Call(make_ref())
    call.feed(did_initiation(DID_PIN, UK_ANI, callback_id=CB), T0)
    call.hangup_initiation(at(1))
    assert call.s.due_kind is TimerKind.EXPIRE
    st = call.tick()
    assert st.delete and st.session is None
    assert st.outputs() == []


def test_timer_seq_increases_with_every_new_timer():
    call = answered()
    seqs = [st.session.timer_seq for st in call.steps]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# === clocks =======================================================================================


def test_leg_times_are_clamped_when_the_pbx_clock_is_behind():
    call = originating()
    # the PBX says leg A was answered, then hung up, before the processors sent the Originate (T0+0.1)
    call.answer(at(6), occurred_at=T0)
    assert call.s.a is not None and call.s.a.answered_at == at(0.1)
    st = call.hangup_a(at(7), occurred_at=T0 - secs(1))
    leg = only(st.legs)
    assert_leg_times_valid(leg)
    assert leg.started_at == at(0.1) == leg.answered_at == leg.ended_at
    assert leg.disposition is Disposition.ANSWERED


def test_leg_b_times_are_clamped_when_the_dial_result_is_early():
    call = dialing()
    call.dial(DialStatus.ANSWER, at(20), occurred_at=at(11))  # before the DialLegB at T0+12
    st = call.hangup("b-uid-1", LegType.B, at(40), occurred_at=at(11.5))
    leg_b = only(st.legs)
    assert_leg_times_valid(leg_b)
    assert leg_b.answered_at == at(12) and leg_b.ended_at == at(12)


# === every session ends ===========================================================================


@pytest.mark.parametrize("path", ["auth_failed", "failed_b", "completed", "failed_a", "rejected"])
def test_every_terminal_session_clears_to_expiry_once_its_legs_are_published(path):
    if path == "auth_failed":
        call = answered(settings=base_settings(pin_attempts=1))
        call.keys(IvrPrompt.PIN, "0000", at(8))
    elif path == "failed_b":
        call = dialing()
        call.dial(DialStatus.BUSY, at(15))
    elif path == "completed":
        call = bridged()
        call.hangup("b-uid-1", LegType.B, at(30))
    elif path == "failed_a":
        call = originating(settings=base_settings(max_retries=0))
        call.originate_result(OriginateOutcome.BUSY, at(5))
    else:
        call = requested(ani=UK_ANI)
    assert call.s.state in TERMINAL_STATES
    while call.s.due_kind is TimerKind.WATCHDOG:
        call.tick()
    assert call.s.due_kind is TimerKind.EXPIRE and call.s.closed_at is not None
    legs = call.legs
    assert len({leg.leg_id for leg in legs}) == len(legs)  # each leg published once
    assert LegType.INITIATION in {leg.leg for leg in legs}
    assert_history_consistent(call)
    states_after_terminal = [t for t in call.transitions if t.from_state in TERMINAL_STATES]
    assert states_after_terminal == []


def test_steps_record_the_processors_time_on_every_output():
    call = requested()
    st = call.verdict(True, at(0.1))
    for _topic, _key, record in st.outputs():
        assert record.time == at(0.1)
        assert record.source == "test-processors"


def test_outputs_keep_their_order_and_keys():
    call = Call(make_ref())
    st = call.feed(did_initiation(DID_PIN, ALICE_ANI, callback_id=CB), T0)
    topics = [(topic, key) for topic, key, _ in st.outputs()]
    assert topics == [("callback.sessions", CB), ("callback.admission", ALICE_ANI)]
