"""Applying one input to its session exactly once, over an at-least-once stream. Pure.

Faust runs ``at_least_once`` (its ``exactly_once`` is not, on our stack: docs/processors.md), so
after a crash or a rebalance some inputs come again. The session makes that harmless:

* it remembers the ids of the inputs it has applied (``Session.applied``): an input seen before
  changes nothing (two AMI producers on one PBX publish every event twice, under one id);
* the outputs of an input go into the session (``Session.outbox``) in the same table write that
  records the input as applied, and are then sent. If the worker dies after the table write but
  before Kafka had the outputs, the input comes again (its offset was not committed), is found
  applied, and its outputs are sent again from the outbox. Every output has a deterministic id,
  so a consumer that already has one drops the copy (the originator by command id, the rater by
  leg id, readers of ``callback.sessions`` by sequence number).
* An outbox entry is dropped once the offset of the input that produced it is committed: Faust
  commits an offset only after flushing its producer, so by then Kafka has the output.

A step that changes nothing (an event of a channel the session does not follow) writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from processors.session import Input, Step, World, remember, step
from processors.state import OutboxEntry, Session

#: (topic, partition, offset) -> whether that offset of the input is committed
Committed = Callable[[str, int, int], bool]


@dataclass(frozen=True)
class InputRecord:
    """One decoded input and where it came from."""

    topic: str
    partition: int
    offset: int
    input_id: str
    record: Input


@dataclass
class Applied:
    #: the session to write (None: write nothing); ``delete``: remove the session instead
    store: Session | None = None
    delete: bool = False
    #: outputs to send now (new ones, or an applied input's outbox again)
    send: list[OutboxEntry] = field(default_factory=list)
    duplicate: bool = False
    step: Step | None = None


def apply_input(
    session: Session | None, item: InputRecord, world: World, now: datetime, committed: Committed
) -> Applied:
    """What to store and send for ``item`` given the stored ``session`` (None if there is none)."""
    if session is not None and item.input_id in session.applied:
        # Kafka delivering the same record again (a restart, a rebalance): its outputs may never
        # have reached Kafka, so send them again. A copy of the input in another record (the other
        # AMI producer of an HA pair) sends nothing: should the original's outputs be lost, the
        # original itself comes again.
        source = (item.topic, item.partition, item.offset)
        again = [
            e for e in session.outbox
            if e.input_id == item.input_id and (e.source_topic, e.source_partition, e.source_offset) == source
        ]
        return Applied(send=again, duplicate=True)
    result = step(session, item.record, world, now)
    entries = [
        OutboxEntry(
            input_id=item.input_id,
            source_topic=item.topic,
            source_partition=item.partition,
            source_offset=item.offset,
            topic=topic,
            key=key,
            value=record.model_dump_json(),
        )
        for topic, key, record in result.outputs()
    ]
    if result.delete:
        return Applied(delete=True, send=entries, step=result)
    if result.session is None or (result.session is session and not entries):
        return Applied(send=entries, step=result)
    kept = tuple(
        e for e in result.session.outbox
        if not committed(e.source_topic, e.source_partition, e.source_offset)
    )
    store = result.session.model_copy(
        update={
            "applied": remember(result.session.applied, item.input_id),
            "outbox": (*kept, *entries),
            "partition": item.partition,
        }
    )
    return Applied(store=store, send=entries, step=result)
