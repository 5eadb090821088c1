"""Fraud guards: limits on how often one number, or one access number, may start a callback. Pure.

The seed warns twice: caller ID is easy to fake ("Anybody can put anybodies CallerID and use your
service for free"), and leg A to a caller who never authenticates is paid by the system owner.
So, safe by default and configurable per dial plan (any scope of the callback settings):

* ``blocked_origin_prefixes``: origins never called back. Default: the satellite and
  international-network codes (Inmarsat 870-874, 881, 882), the seed's expensive surprise;
* ``max_initiations_per_ani_per_minute`` (default 3) and ``max_initiations_per_did_per_minute``
  (default 600); 0 switches a limit off;
* ``one_live_session_per_ani`` (default on): no second callback to a number while one is under way.

The blocklist needs no state and is checked with the initiation (``processors.initiation``). The
counting guards need every initiation of a number in one place, whichever worker owns its session:
they run in the guard stage, one partition (``callback.admission``), so counts are exact across the
cluster. ``admit`` decides one request against the counters of its number and its DID, and is
idempotent: asking again for a callback id it has seen returns the first verdict unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import Field

from schemas.control import AdmissionRequest
from schemas.envelope import Record, UtcDatetime
from schemas.reference import CallbackSettings

DEFAULT_PER_NUMBER_PER_MINUTE = 3
DEFAULT_PER_DID_PER_MINUTE = 600
DEFAULT_ONE_LIVE_SESSION = True
#: Inmarsat (870-874: 871-874 are retired ocean regions) and the international networks (881 GMSS,
#: 882): rates of several dollars a minute, and a favourite of toll fraud.
DEFAULT_BLOCKED_PREFIXES: tuple[str, ...] = ("870", "871", "872", "873", "874", "881", "882")

WINDOW = timedelta(minutes=1)
#: a live session the guard never hears the end of (a lost release) stops counting after this
LIVE_TTL = timedelta(hours=4)


@dataclass(frozen=True)
class GuardLimits:
    per_number_per_minute: int = DEFAULT_PER_NUMBER_PER_MINUTE
    per_did_per_minute: int = DEFAULT_PER_DID_PER_MINUTE
    one_live_session: bool = DEFAULT_ONE_LIVE_SESSION
    blocked_prefixes: tuple[str, ...] = DEFAULT_BLOCKED_PREFIXES

    @classmethod
    def from_settings(cls, settings: CallbackSettings) -> GuardLimits:
        """The limits in ``settings`` (already overlaid for the DID and dial plan); unset = default."""
        return cls(
            _or(settings.max_initiations_per_ani_per_minute, DEFAULT_PER_NUMBER_PER_MINUTE),
            _or(settings.max_initiations_per_did_per_minute, DEFAULT_PER_DID_PER_MINUTE),
            _or(settings.one_live_session_per_ani, DEFAULT_ONE_LIVE_SESSION),
            tuple(_or(settings.blocked_origin_prefixes, list(DEFAULT_BLOCKED_PREFIXES))),
        )

    def blocked_prefix(self, number: str) -> str | None:
        """The longest blocked prefix ``number`` starts with, or None."""
        hits = [p for p in self.blocked_prefixes if number.startswith(p)]
        return max(hits, key=len) if hits else None

    @property
    def counting(self) -> bool:
        """Whether any guard needs the counters (else the guard stage can be skipped)."""
        return self.per_number_per_minute > 0 or self.per_did_per_minute > 0 or self.one_live_session


def _or(value, default):  # noqa: ANN001, ANN202 - a typed `x if x is not None else d`
    return default if value is None else value


class Asked(Record):
    callback_id: str
    at: UtcDatetime
    admitted: bool
    reason: str = ""


class Live(Record):
    callback_id: str
    since: UtcDatetime


class GuardEntry(Record):
    """The counters of one number (``ani:<n>``) or one access number (``did:<n>``).

    A number keeps each request of the last minute (its verdict makes a repeated request
    idempotent) and its live sessions; an access number, which may take hundreds of initiations a
    minute, keeps only counts per second, so its record stays small."""

    asked: tuple[Asked, ...] = Field(default=(), description="a number's requests of the last minute")
    live: tuple[Live, ...] = Field(default=(), description="admitted sessions not yet released")
    per_second: tuple[tuple[int, int], ...] = Field(
        default=(), description="an access number's (epoch second, requests) of the last minute"
    )

    def pruned(self, now: datetime) -> GuardEntry:
        oldest_second = int((now - WINDOW).timestamp())
        return GuardEntry(
            asked=tuple(a for a in self.asked if a.at > now - WINDOW),
            live=tuple(lv for lv in self.live if lv.since > now - LIVE_TTL),
            per_second=tuple((s, n) for s, n in self.per_second if s > oldest_second),
        )

    def count_second(self, now: datetime) -> GuardEntry:
        second = int(now.timestamp())
        if self.per_second and self.per_second[-1][0] == second:
            counts = (*self.per_second[:-1], (second, self.per_second[-1][1] + 1))
        else:
            counts = (*self.per_second, (second, 1))
        return self.model_copy(update={"per_second": counts})

    @property
    def requests_last_minute(self) -> int:
        return len(self.asked) + sum(n for _s, n in self.per_second)

    @property
    def empty(self) -> bool:
        return not self.asked and not self.live and not self.per_second


def number_key(number: str) -> str:
    return f"ani:{number}"


def did_key(did: str) -> str:
    return f"did:{did}"


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str
    number_entry: GuardEntry
    did_entry: GuardEntry | None


def admit(request: AdmissionRequest, number: GuardEntry, did: GuardEntry | None) -> Admission:
    """Decide ``request`` against its number's and DID's counters; returns the new counters.

    Every request counts toward the per-minute limits, refused ones too (a caller hammering the
    access number stays refused). Time is the initiation's ``received_at``, so a replay decides
    the same."""
    now = request.received_at
    number, did = number.pruned(now), did.pruned(now) if did is not None else None
    for seen in number.asked:
        if seen.callback_id == request.callback_id:
            return Admission(seen.admitted, seen.reason, number, did)
    if any(lv.callback_id == request.callback_id for lv in number.live):
        return Admission(True, "", number, did)  # admitted more than a minute ago
    reason = ""
    if request.per_number_per_minute and number.requests_last_minute >= request.per_number_per_minute:
        reason = "fraud_ani_rate"
    elif (
        did is not None
        and request.per_did_per_minute
        and did.requests_last_minute >= request.per_did_per_minute
    ):
        reason = "fraud_did_rate"
    elif request.one_live_session and number.live:
        reason = "fraud_live_session"
    admitted = not reason
    asked = Asked(callback_id=request.callback_id, at=now, admitted=admitted, reason=reason)
    number = number.model_copy(
        update={
            "asked": (*number.asked, asked),
            "live": (*number.live, Live(callback_id=request.callback_id, since=now))
            if admitted
            else number.live,
        }
    )
    if did is not None:
        did = did.count_second(now)
    return Admission(admitted, reason, number, did)


def forgettable(entries: Iterable[tuple[str, GuardEntry]], now: datetime) -> list[str]:
    """Keys whose counters have nothing left to count at ``now`` (no request of the last minute,
    no live session): the guard's table keeps the recent and the live, not every number ever seen."""
    return [key for key, entry in entries if entry.pruned(now).empty]


def release(entry: GuardEntry, callback_id: str) -> GuardEntry:
    """``callback_id`` has ended: its number no longer has it live (idempotent)."""
    return entry.model_copy(update={"live": tuple(lv for lv in entry.live if lv.callback_id != callback_id)})
