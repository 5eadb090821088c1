"""``processors.apply.apply_input``: each input applied once over an at-least-once stream, its outputs
kept in the session's outbox until the input's offset is committed, and replays byte-identical."""

from __future__ import annotations

from processors.apply import Applied, InputRecord, apply_input
from processors.session import World
from processors.state import APPLIED_MEMORY, Session
from schemas.control import AdmissionVerdict, TimerTick
from schemas.pbx_events import ChannelHangup, IvrInput, IvrPrompt, OriginateOutcome, OriginateResult
from schemas.topics import CALLBACK_CONTROL, CALLBACK_REQUESTS, PBX_EVENTS
from tests.unit.processors_helpers import ALICE_ANI, DID_PIN, SERVER_ID, UK_ANI, at, did_initiation, make_ref

CB = "cb1"


def never(_topic: str, _partition: int, _offset: int) -> bool:
    return False


def world() -> World:
    return World(make_ref(), source="test-processors")


def init_item(offset: int = 10, ani: str = ALICE_ANI) -> InputRecord:
    record = did_initiation(DID_PIN, ani, callback_id=CB)
    return InputRecord(CALLBACK_REQUESTS.name, 3, offset, record.event_id, record)


def verdict_item(offset: int = 20) -> InputRecord:
    record = AdmissionVerdict(source="guard", event_id=f"verdict:{CB}", callback_id=CB, admitted=True)
    return InputRecord(CALLBACK_CONTROL.name, 3, offset, record.event_id, record)


def answer_item(session: Session, offset: int = 30) -> InputRecord:
    assert session.a is not None
    record = OriginateResult(
        source="ami",
        event_id="ami-answer-1",
        pbx_id=SERVER_ID,
        callback_id=CB,
        occurred_at=at(6),
        reason_code=4,
        outcome=OriginateOutcome.ANSWERED,
        command_id=session.a.command_id,
        channel="PJSIP/a-1",
        uniqueid=session.a.uniqueid,
    )
    return InputRecord(PBX_EVENTS.name, 3, offset, record.event_id, record)


def pin_item(session: Session, offset: int, pin: str, event_id: str) -> InputRecord:
    assert session.a is not None
    record = IvrInput(
        source="ami",
        event_id=event_id,
        pbx_id=SERVER_ID,
        callback_id=CB,
        occurred_at=at(9),
        prompt=IvrPrompt.PIN,
        digits=pin,
        uniqueid=session.a.uniqueid,
    )
    return InputRecord(PBX_EVENTS.name, 3, offset, record.event_id, record)


def stored(applied: Applied) -> Session:
    assert applied.store is not None
    return applied.store


def test_an_input_is_applied_once_with_its_outputs_in_the_outbox():
    item = init_item()
    applied = apply_input(None, item, world(), at(0), never)
    assert not applied.duplicate and not applied.delete
    session = stored(applied)
    assert session.applied == (item.input_id,)
    assert session.partition == 3
    assert applied.step is not None
    expected = applied.step.outputs()
    assert len(expected) == 2  # the requested transition and the guard request
    assert [(e.topic, e.key, e.value) for e in applied.send] == [
        (topic, key, record.model_dump_json()) for topic, key, record in expected
    ]
    assert session.outbox == tuple(applied.send)
    for entry in applied.send:
        assert (entry.input_id, entry.source_topic, entry.source_partition, entry.source_offset) == (
            item.input_id,
            CALLBACK_REQUESTS.name,
            3,
            10,
        )


def test_the_same_input_again_changes_nothing_and_resends_its_outbox_entries():
    w = world()
    first = apply_input(None, init_item(), w, at(0), never)
    second = apply_input(stored(first), verdict_item(), w, at(0.1), never)
    session = stored(second)
    assert len(session.outbox) == len(first.send) + len(second.send)

    again = apply_input(session, init_item(), w, at(5), never)  # the initiation redelivered
    assert again.duplicate
    assert again.store is None and not again.delete and again.step is None
    assert again.send == first.send  # exactly that input's outputs, none of the verdict's

    again = apply_input(session, verdict_item(), w, at(5), never)
    assert again.duplicate and again.send == second.send
    assert [e.topic for e in again.send] == [
        "callback.sessions",
        "callback.sessions",
        "pbx.commands",
        "pbx.commands",
    ]


def test_a_copy_of_an_applied_input_in_another_record_changes_nothing_and_sends_nothing():
    """The other AMI producer of an HA pair publishes the same event (same id) as another record:
    applied once; should the original's outputs be lost, the original record itself comes again."""
    w = world()
    first = apply_input(None, init_item(offset=10), w, at(0), never)
    session = stored(first)
    copy = apply_input(session, init_item(offset=11), w, at(0.01), never)  # same id, next offset
    assert copy.duplicate and copy.store is None and copy.send == []
    redelivered = apply_input(session, init_item(offset=10), w, at(5), never)
    assert redelivered.duplicate and redelivered.send == first.send


def test_outbox_entries_of_committed_inputs_are_dropped():
    w = world()
    s1 = stored(apply_input(None, init_item(offset=10), w, at(0), never))
    asked: list[tuple[str, int, int]] = []

    def committed(topic: str, partition: int, offset: int) -> bool:
        asked.append((topic, partition, offset))
        return (topic, partition, offset) == (CALLBACK_REQUESTS.name, 3, 10)

    applied = apply_input(s1, verdict_item(offset=20), w, at(0.1), committed)
    s2 = stored(applied)
    assert (CALLBACK_REQUESTS.name, 3, 10) in asked
    assert {e.input_id for e in s2.outbox} == {f"verdict:{CB}"}
    assert s2.outbox == tuple(applied.send)
    # once dropped, a redelivery of that input has nothing left to re-send (Kafka has it)
    again = apply_input(s2, init_item(offset=10), w, at(1), never)
    assert again.duplicate and again.send == []


def test_outbox_keeps_uncommitted_entries():
    w = world()
    s1 = stored(apply_input(None, init_item(offset=10), w, at(0), never))
    s2 = stored(apply_input(s1, verdict_item(offset=20), w, at(0.1), never))
    assert {e.input_id for e in s2.outbox} == {init_item().input_id, f"verdict:{CB}"}


def test_applied_ids_are_bounded_to_the_most_recent():
    w = world()
    s1 = stored(apply_input(None, init_item(), w, at(0), never))
    old = tuple(f"old-{i}" for i in range(APPLIED_MEMORY))
    full = s1.model_copy(update={"applied": old})
    s2 = stored(apply_input(full, verdict_item(), w, at(0.1), never))
    assert len(s2.applied) == APPLIED_MEMORY
    assert s2.applied[-1] == f"verdict:{CB}"
    assert "old-0" not in s2.applied and "old-1" in s2.applied


def test_a_step_that_changes_nothing_stores_nothing():
    w = world()
    s1 = stored(apply_input(None, init_item(), w, at(0), never))
    s2 = stored(apply_input(s1, verdict_item(), w, at(0.1), never))
    record = IvrInput(
        source="ami",
        event_id="stray",
        pbx_id=SERVER_ID,
        callback_id=CB,
        occurred_at=at(2),
        prompt=IvrPrompt.PIN,
        digits="1234",
        uniqueid="another-channel",
    )
    applied = apply_input(s2, InputRecord(PBX_EVENTS.name, 3, 40, "stray", record), w, at(2), never)
    assert applied.store is None and applied.send == [] and not applied.delete and not applied.duplicate


def test_an_event_of_an_unknown_callback_stores_nothing():
    record = IvrInput(
        source="ami",
        event_id="stray",
        pbx_id=SERVER_ID,
        callback_id="ghost",
        occurred_at=at(2),
        prompt=IvrPrompt.PIN,
        digits="1234",
    )
    applied = apply_input(None, InputRecord(PBX_EVENTS.name, 0, 1, "stray", record), world(), at(2), never)
    assert applied.store is None and applied.send == [] and not applied.delete


def test_expiry_deletes_the_session():
    w = world()
    s1 = stored(apply_input(None, init_item(ani=UK_ANI), w, at(0), never))  # refused
    hangup = ChannelHangup(
        source="ami",
        event_id="h-init",
        pbx_id=SERVER_ID,
        callback_id=CB,
        uniqueid="init-1",
        occurred_at=at(1),
        q850_cause=17,
    )
    s2 = stored(apply_input(s1, InputRecord(PBX_EVENTS.name, 3, 11, "h-init", hangup), w, at(1), never))
    assert s2.due_kind is not None and s2.due_at is not None
    tick = TimerTick(
        source="timers",
        event_id=f"tick:{CB}:{s2.timer_seq}",
        callback_id=CB,
        timer_seq=s2.timer_seq,
        kind=s2.due_kind,
        due_at=s2.due_at,
    )
    applied = apply_input(
        s2, InputRecord(CALLBACK_CONTROL.name, 3, 12, tick.event_id, tick), w, s2.due_at, never
    )
    assert applied.delete and applied.store is None and applied.send == []


def _run(wrong_pins: int) -> list[tuple[str, str, str]]:
    """A callback from scratch up to the PIN, on fresh reference data: every output sent."""
    w = world()
    sent: list[tuple[str, str, str]] = []
    applied = apply_input(None, init_item(), w, at(0), never)
    sent += [(e.topic, e.key, e.value) for e in applied.send]
    session = stored(applied)
    applied = apply_input(session, verdict_item(), w, at(0.1), never)
    sent += [(e.topic, e.key, e.value) for e in applied.send]
    session = stored(applied)
    applied = apply_input(session, answer_item(session), w, at(6), never)
    sent += [(e.topic, e.key, e.value) for e in applied.send]
    session = stored(applied)
    for n in range(wrong_pins):
        applied = apply_input(session, pin_item(session, 40 + n, "0000", f"pin-{n}"), w, at(8 + n), never)
        sent += [(e.topic, e.key, e.value) for e in applied.send]
        session = stored(applied)
    return sent


def test_replaying_an_input_on_the_same_stored_session_is_byte_identical():
    w = world()
    s1 = stored(apply_input(None, init_item(), w, at(0), never))
    s2 = stored(apply_input(s1, verdict_item(), w, at(0.1), never))
    item = answer_item(s2)
    one = apply_input(s2, item, w, at(6), never)
    two = apply_input(s2, item, World(make_ref(), source="test-processors"), at(6), never)
    assert one.send and [e.model_dump_json() for e in one.send] == [e.model_dump_json() for e in two.send]
    assert stored(one).model_dump_json() == stored(two).model_dump_json()


def test_a_whole_callback_replayed_from_scratch_gives_the_same_bytes():
    first, second = _run(2), _run(2)
    assert len(first) > 8
    assert first == second
    ids = [value for _t, _k, value in first]
    assert len(set(ids)) == len(ids)  # and no output repeats within one run
