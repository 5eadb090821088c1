"""AMI event -> domain events: the one translation shared by the live producer and ``ami-replay``.

``Translator.translate`` takes one AMI event (a mapping of headers, as panoramisk or a JSON
transcript gives it) and returns what to do with it: records to publish (``Publish``), a record
that is bad input (``Reject``, to be dead-lettered), or nothing (an event the pipeline does not use,
e.g. ``NewCallerid``; the caller counts those). It does no I/O and reads no clock: the time an
event was read is an argument, so a replay is reproducible.

Mapping (Asterisk 13+ field names):

* ``Newstate``/``Newchannel`` reaching ``Up`` (ChannelState 6) -> ``channel.answered``
* ``Hangup`` -> ``channel.hangup`` (Cause, Cause-txt, SIP response from ``sip_for_q850``)
* ``DialEnd`` -> ``dial.result`` (DialStatus); DialEnd may lack ``Channel`` (an Originate's dial)
* ``OriginateResponse`` -> ``originate.result`` (Reason 0/1/3/4/5/8; ActionID decodes the command)
* ``UserEvent`` ``CallbackInput`` (``Prompt``, ``Digits``) -> ``ivr.input``
* the first event of an inbound channel (its own Linkedid, not a Local/ half, not one of ours)
  whose ``Exten`` is a callback access number -> ``callback.initiation`` on ``callback.requests``;
  later events of that channel carry its callback id with leg ``initiation``.

Keys: ``callback_id`` when the channel carries ``CALLBACK_ID`` (or is a tracked initiation, or
belongs to a call -- Linkedid -- in which a channel carrying it was seen), else ``Linkedid``. Every
record has a deterministic ``event_id`` and a ``dedup_key`` (PBX id, Uniqueid, event identity) so the
producer can drop an event it has already published.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from producers.action_ids import decode_action_id
from producers.ami_fields import (
    AmiEvent,
    channel_variables,
    event_timestamp,
    header,
    normalize_number,
)
from schemas.callback import CallbackInitiation, InitiationOrigin, LegType
from schemas.envelope import Envelope
from schemas.hangup_causes import sip_for_q850
from schemas.pbx_events import (
    ORIGINATE_REASONS,
    ChannelAnswered,
    ChannelHangup,
    DialResult,
    DialStatus,
    IvrInput,
    IvrPrompt,
    OriginateOutcome,
    OriginateResult,
)
from schemas.topics import CALLBACK_REQUESTS, PBX_EVENTS

log = logging.getLogger(__name__)

#: ``UserEvent`` name the callback dialplan raises with the digits a caller entered.
IVR_USER_EVENT = "CallbackInput"
#: headers of a CallbackInput that make two identical inputs distinguishable (a retried PIN)
_IVR_SEQUENCE_HEADERS = ("Timestamp", "Seq", "Try", "Attempt", "InputId")
_UP_STATE = "6"
DedupKey = tuple[str, str, str]


@dataclass(frozen=True)
class Publish:
    """A record to publish: topic, key and value; ``dedup_key`` None means never treated as a duplicate."""

    topic: str
    key: str
    value: Envelope
    dedup_key: DedupKey | None


@dataclass(frozen=True)
class Reject:
    """An AMI event the pipeline should understand but cannot (bad Cause, unknown DialStatus, ...)."""

    reason: str
    error_kind: str


Outcome = Publish | Reject


@dataclass(frozen=True)
class _ChannelFacts:
    """What every event of a channel says about who it is."""

    channel: str | None
    uniqueid: str | None
    linkedid: str | None
    callback_id: str | None
    leg: LegType | None
    attempt: int | None


@dataclass
class Translator:
    """Translates one PBX's AMI events. Holds only the access-number set and the bounded map of
    initiation channels seen, so later events of an initiation carry its callback id."""

    pbx_id: str
    dids: frozenset[str] = frozenset()
    max_tracked: int = 50_000
    _initiations: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _linked: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def set_dids(self, dids: Iterable[str]) -> None:
        """Replace the access-number set (``config.dids`` changed)."""
        self.dids = frozenset(dids)

    def translate(self, event: AmiEvent, read_at: datetime) -> list[Outcome]:
        """Domain records for one AMI event. ``read_at`` is used when the event has no ``Timestamp``."""
        name = header(event, "Event") or ""
        occurred = event_timestamp(event) or read_at
        try:
            return self._dispatch(name, event, occurred, read_at)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return [Reject(f"{name}: {where}: {first.get('msg')}", "invalid_schema")]

    # --- per event --------------------------------------------------------------------------------

    def _dispatch(self, name: str, event: AmiEvent, occurred: datetime, read_at: datetime) -> list[Outcome]:
        out: list[Outcome] = []
        self._observe(event)
        initiation = self._initiation(event, occurred, read_at)
        if initiation is not None:
            out.append(initiation)
        if name in ("Newstate", "Newchannel"):
            if header(event, "ChannelState") == _UP_STATE or header(event, "ChannelStateDesc") == "Up":
                out.append(self._answered(event, occurred, read_at))
        elif name == "Hangup":
            out.append(self._hangup(event, occurred, read_at))
        elif name == "DialEnd":
            out.append(self._dial_end(event, occurred, read_at))
        elif name == "OriginateResponse":
            out.append(self._originate_response(event, occurred, read_at))
        elif name == "UserEvent" and header(event, "UserEvent") == IVR_USER_EVENT:
            out.append(self._ivr_input(event, occurred, read_at))
        return out

    def _answered(self, event: AmiEvent, occurred: datetime, read_at: datetime) -> Outcome:
        facts = self._facts(event)
        record = ChannelAnswered(
            **self._base(facts, "answered", occurred, read_at),
            caller_id_num=normalize_number(header(event, "CallerIDNum")),
            connected_num=normalize_number(header(event, "ConnectedLineNum")),
        )
        return self._publish(record, facts, "answered")

    def _hangup(self, event: AmiEvent, occurred: datetime, read_at: datetime) -> Outcome:
        facts = self._facts(event)
        raw_cause = header(event, "Cause")
        if raw_cause is None or not raw_cause.strip().isdigit() or int(raw_cause) > 127:
            return Reject(f"Hangup of {facts.channel}: Cause {raw_cause!r} is not a Q.850 cause", "bad_cause")
        cause = int(raw_cause)
        record = ChannelHangup(
            **self._base(facts, "hangup", occurred, read_at),
            q850_cause=cause,
            cause_text=header(event, "Cause-txt") or "",
            sip_code=sip_for_q850(cause),
        )
        return self._publish(record, facts, "hangup")

    def _dial_end(self, event: AmiEvent, occurred: datetime, read_at: datetime) -> Outcome:
        facts = self._facts(event)
        dest_vars = channel_variables(event, prefix="Dest")
        if facts.uniqueid is None:
            # An Originate's own dial: DialBegin/DialEnd without Channel; the call is the dest's.
            facts = _ChannelFacts(
                None,
                None,
                header(event, "DestLinkedid"),
                facts.callback_id or dest_vars.get("CALLBACK_ID"),
                facts.leg,
                facts.attempt,
            )
        dest_leg = parse_leg(dest_vars.get("LEG"))
        if dest_leg is not None:
            facts = _ChannelFacts(
                facts.channel,
                facts.uniqueid,
                facts.linkedid,
                dest_vars.get("CALLBACK_ID", facts.callback_id),
                dest_leg,
                _int_or_none(dest_vars.get("ATTEMPT")),
            )
        status = header(event, "DialStatus") or ""
        try:
            dial_status = DialStatus(status)
        except ValueError:
            return Reject(f"DialEnd of {facts.channel}: unknown DialStatus {status!r}", "unknown_dial_status")
        dest_uniqueid = header(event, "DestUniqueid")
        identity = f"dial:{dest_uniqueid or header(event, 'DestChannel')}"
        record = DialResult(
            **self._base(facts, identity, occurred, read_at, fallback_uid=dest_uniqueid),
            dial_status=dial_status,
            dest_channel=header(event, "DestChannel"),
            dest_uniqueid=dest_uniqueid,
            dest_number=normalize_number(header(event, "DestCallerIDNum")),
        )
        return self._publish(record, facts, identity, fallback_uid=dest_uniqueid)

    def _originate_response(self, event: AmiEvent, occurred: datetime, read_at: datetime) -> Outcome:
        raw_reason = header(event, "Reason")
        if raw_reason is None or not raw_reason.strip().isdigit():
            return Reject(f"OriginateResponse: Reason {raw_reason!r} is not a number", "bad_reason")
        code = int(raw_reason)
        outcome = ORIGINATE_REASONS.get(code)
        if outcome is None:
            log.warning(
                "OriginateResponse Reason %s is not a known AST_CONTROL code; reported as failed", code
            )
            outcome = OriginateOutcome.FAILED
        action_id = header(event, "ActionID")
        ref = decode_action_id(action_id)
        facts = self._facts(event)
        if ref is not None:
            leg = parse_leg(ref.leg)
            facts = _ChannelFacts(
                facts.channel,
                facts.uniqueid,
                facts.linkedid or facts.uniqueid,
                ref.callback_id,
                leg,
                ref.attempt,
            )
        identity = f"originate:{action_id or facts.channel}"
        record = OriginateResult(
            **self._base(facts, identity, occurred, read_at),
            reason_code=code,
            outcome=outcome,
            command_id=ref.command_id if ref else None,
        )
        return self._publish(record, facts, identity)

    def _ivr_input(self, event: AmiEvent, occurred: datetime, read_at: datetime) -> Outcome:
        facts = self._facts(event)
        raw_prompt = (header(event, "Prompt") or "").strip().lower()
        try:
            prompt = IvrPrompt(raw_prompt)
        except ValueError:
            return Reject(
                f"CallbackInput on {facts.channel}: unknown Prompt {raw_prompt!r}", "unknown_prompt"
            )
        digits = (header(event, "Digits") or "").strip()
        markers = [header(event, h) for h in _IVR_SEQUENCE_HEADERS]
        distinguishable = any(m is not None for m in markers)
        identity = "ivr:" + prompt.value + ":" + digits + ":" + ":".join(m or "" for m in markers)
        record = IvrInput(**self._base(facts, identity, occurred, read_at), prompt=prompt, digits=digits)
        # Without a Timestamp or sequence header two identical inputs (a retried wrong PIN) cannot be
        # told apart, so they are never dropped as duplicates: a lost PIN attempt stalls a session.
        return self._publish(record, facts, identity, dedupable=distinguishable)

    def _initiation(self, event: AmiEvent, occurred: datetime, read_at: datetime) -> Publish | None:
        """A call reaching a callback access number, reported once per channel."""
        uniqueid = header(event, "Uniqueid")
        channel = header(event, "Channel")
        if not self.dids or uniqueid is None or channel is None or uniqueid in self._initiations:
            return None
        if header(event, "Linkedid") not in (None, uniqueid) or channel.startswith("Local/"):
            return None  # not the first channel of its call: a Local half or a dialled leg
        if channel_variables(event).get("CALLBACK_ID"):
            return None  # a channel the originator created
        did = normalize_number(header(event, "Exten"))
        if did is None or did not in self.dids:
            return None
        callback_id = initiation_callback_id(self.pbx_id, uniqueid)
        _remember(self._initiations, uniqueid, callback_id, self.max_tracked)
        ani = normalize_number(header(event, "CallerIDNum"))
        record = CallbackInitiation(
            event_id=_event_id(self.pbx_id, uniqueid, "initiation"),
            source=f"ami/{self.pbx_id}",
            time=read_at,
            callback_id=callback_id,
            origin=InitiationOrigin.DID,
            ani=ani,
            did=did,
            pbx_id=self.pbx_id,
            channel=channel,
            uniqueid=uniqueid,
            callback_number=ani,
            received_at=occurred,
        )
        log.info(
            "initiation %s: ANI %s called access number %s on %s (%s)",
            callback_id,
            ani or "withheld",
            did,
            self.pbx_id,
            channel,
        )
        return Publish(CALLBACK_REQUESTS.name, callback_id, record, (self.pbx_id, uniqueid, "initiation"))

    # --- shared -------------------------------------------------------------------------------------

    def _observe(self, event: AmiEvent) -> None:
        """Remember which call (Linkedid) a callback's channel belongs to, from any event (VarSet,
        Newexten... included), so the call's channels without the variables are keyed by it too."""
        linkedid = header(event, "Linkedid")
        if linkedid is None or linkedid in self._linked:
            return
        callback_id = channel_variables(event).get("CALLBACK_ID")
        if callback_id is not None:
            _remember(self._linked, linkedid, callback_id, self.max_tracked)

    def _facts(self, event: AmiEvent) -> _ChannelFacts:
        uniqueid = header(event, "Uniqueid")
        variables = channel_variables(event)
        callback_id = variables.get("CALLBACK_ID")
        leg = parse_leg(variables.get("LEG"))
        linkedid = header(event, "Linkedid")
        if callback_id is None and uniqueid is not None and uniqueid in self._initiations:
            callback_id, leg = self._initiations[uniqueid], LegType.INITIATION
        elif callback_id is None and linkedid is not None and linkedid in self._linked:
            # a channel of a callback's call without the variables (e.g. the trunk channel a Local/
            # originate dials): same callback, leg unknown
            callback_id = self._linked[linkedid]
        return _ChannelFacts(
            channel=header(event, "Channel"),
            uniqueid=uniqueid,
            linkedid=linkedid,
            callback_id=callback_id,
            leg=leg,
            attempt=_int_or_none(variables.get("ATTEMPT")),
        )

    def _base(
        self,
        facts: _ChannelFacts,
        identity: str,
        occurred: datetime,
        read_at: datetime,
        fallback_uid: str | None = None,
    ) -> dict[str, object]:
        uid = facts.uniqueid or fallback_uid or ""
        return {
            "event_id": _event_id(self.pbx_id, uid, identity),
            "source": f"ami/{self.pbx_id}",
            "time": read_at,
            "pbx_id": self.pbx_id,
            "channel": facts.channel,
            "uniqueid": facts.uniqueid,
            "linkedid": facts.linkedid,
            "callback_id": facts.callback_id,
            "leg": facts.leg,
            "attempt": facts.attempt,
            "occurred_at": occurred,
        }

    def _publish(
        self,
        record: ChannelAnswered | ChannelHangup | DialResult | OriginateResult | IvrInput,
        facts: _ChannelFacts,
        identity: str,
        *,
        fallback_uid: str | None = None,
        dedupable: bool = True,
    ) -> Publish:
        uid = facts.uniqueid or fallback_uid or ""
        return Publish(
            PBX_EVENTS.name, record.kafka_key, record, (self.pbx_id, uid, identity) if dedupable else None
        )


def initiation_callback_id(pbx_id: str, uniqueid: str) -> str:
    """Deterministic callback id of a DID initiation: the same call always yields the same id, so a
    re-read event (producer restart, HA pair) is recognisable downstream. Readable when it fits."""
    readable = f"{pbx_id}.{uniqueid}"
    if len(readable) <= 64 and all(c.isalnum() or c in "_.:-" for c in readable):
        return readable
    return "cb-" + hashlib.sha256(readable.encode()).hexdigest()[:40]


def _remember(lru: OrderedDict[str, str], key: str, value: str, capacity: int) -> None:
    lru[key] = value
    while len(lru) > capacity:
        lru.popitem(last=False)


def parse_leg(raw: str | None) -> LegType | None:
    """``LEG`` as dialplans write it: ``A``/``a``/``B``/``initiation`` (case does not matter)."""
    if raw is None:
        return None
    try:
        return LegType(raw.strip().lower())
    except ValueError:
        return None


def _event_id(pbx_id: str, uniqueid: str, identity: str) -> str:
    return hashlib.sha256(f"{pbx_id}|{uniqueid}|{identity}".encode()).hexdigest()[:32]


def _int_or_none(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() else None


def now_utc() -> datetime:
    return datetime.now(UTC)
