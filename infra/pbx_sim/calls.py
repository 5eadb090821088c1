"""The call/channel state machine: channels, dials, bridges and hangups, as Asterisk events.

:class:`CallCore` owns every live channel and knows the rules that make the event stream
look like Asterisk's: a new channel raises Newchannel, a state change Newstate, a
variable VarSet; ``Dial()`` raises DialBegin/DialEnd around the callee's scenario
outcome; hangups propagate out of a bridge (BridgeLeave x2, BridgeDestroy) to the other
party, through Local channel halves, and from a caller to the callee it is still ringing.

It does no I/O: delays go through a :class:`~infra.pbx_sim.clock.Scheduler` (virtual
time) and events to a ``publish`` callback, so a unit test replays a call instantly.
What channels *do* once answered lives in ``dialplan.py``; Originate in ``originate.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from infra.pbx_sim.causes import (
    NO_ANSWER,
    NORMAL_CIRCUIT_CONGESTION,
    NORMAL_CLEARING,
    SUBSCRIBER_ABSENT,
    USER_BUSY,
    ChannelState,
    DialStatus,
    dial_status_for_cause,
)
from infra.pbx_sim.channels import Bridge, Channel, DialTarget, Ids, Role, parse_caller_id
from infra.pbx_sim.clock import Scheduler
from infra.pbx_sim.events import Event, EventBuilder
from infra.pbx_sim.scenario import Scenario, Subscriber

Publish = Callable[[Event], None]

#: Virtual seconds between sending the INVITE and the far end's 180 Ringing.
RING_DELAY = 0.05

#: DialStatus and default Q.850 cause of each failing scenario outcome.
FAILURES = {
    "busy": (DialStatus.BUSY, USER_BUSY),
    "congestion": (DialStatus.CONGESTION, NORMAL_CIRCUIT_CONGESTION),
    "unreachable": (DialStatus.CHANUNAVAIL, SUBSCRIBER_ABSENT),
}


class CallCore:
    """Single-threaded: every method is called from the event loop (or a manual scheduler)."""

    def __init__(self, scenario: Scenario, scheduler: Scheduler, publish: Publish) -> None:
        self.scenario = scenario
        self.config = scenario.pbx
        self.scheduler = scheduler
        self._publish = publish
        self.events = EventBuilder(self.config.channelvars)
        #: calls placed to each number so far (a subscriber's ``outcomes`` play in this order)
        self.calls_to: Counter[str] = Counter()
        self.ids = Ids(self.config.system_name, scheduler.now)
        self.channels: dict[str, Channel] = {}

    # ------------------------------------------------------------------ lookups

    def find(self, name_or_uniqueid: str) -> Channel | None:
        """By channel name, else by Uniqueid, as ``ast_channel_get_by_name`` does."""
        found = self.channels.get(name_or_uniqueid)
        if found is not None:
            return found
        wanted = name_or_uniqueid.lower()
        for ch in self.channels.values():
            if ch.uniqueid == name_or_uniqueid or ch.name.lower() == wanted:
                return ch
        return None

    def uniqueid_in_use(self, uniqueid: str) -> bool:
        return any(ch.uniqueid == uniqueid for ch in self.channels.values())

    def behaviour(self, ch: Channel) -> Subscriber:
        """The scenario of the subscriber behind ``ch``."""
        return self.scenario.subscriber(ch.party)

    # ------------------------------------------------------------------ primitives

    def now(self) -> float:
        return self.scheduler.now()

    def emit(self, event: Event) -> None:
        self._publish(event)

    def later(self, owners: Iterable[Channel], delay: float, callback: Callable[[], None]) -> None:
        """Schedule ``callback``; it is cancelled if any owner hangs up (or changes context) first."""
        timer = self.scheduler.call_later(delay, callback)
        for ch in owners:
            ch.timers.append(timer)

    def new_channel(
        self,
        name: str,
        role: Role,
        party: str,
        *,
        state: ChannelState,
        context: str,
        exten: str,
        uniqueid: str | None = None,
        linkedid: str | None = None,
        caller: tuple[str, str] = ("", ""),
        connected: tuple[str, str] = ("", ""),
        accountcode: str = "",
    ) -> Channel:
        uid = uniqueid or self.ids.uniqueid()
        ch = Channel(
            name=name,
            uniqueid=uid,
            linkedid=linkedid or uid,
            role=role,
            party=party,
            state=state,
            caller_num=caller[0],
            caller_name=caller[1],
            connected_num=connected[0],
            connected_name=connected[1],
            accountcode=accountcode,
            context=context,
            exten=exten,
            created_at=self.now(),
        )
        self.channels[name] = ch
        self.emit(self.events.newchannel(ch, self.now()))
        return ch

    def set_state(self, ch: Channel, state: ChannelState) -> None:
        if ch.hungup or ch.state == state:
            return
        ch.state = state
        self.emit(self.events.newstate(ch, self.now()))

    def set_var(self, ch: Channel, name: str, value: str) -> None:
        ch.set_var(name, value)
        self.emit(self.events.var_set(ch, name, value, self.now()))

    def write_callerid(self, ch: Channel, part: str, value: str) -> bool:
        """``Set(CALLERID(num)=...)``: a dialplan function, so NewCallerid instead of VarSet."""
        if part == "all":
            ch.caller_num, ch.caller_name = parse_caller_id(value)
        elif part in ("num", "number"):
            ch.caller_num = value
        elif part == "name":
            ch.caller_name = value
        else:
            return False
        self.emit(self.events.new_callerid(ch, self.now()))
        return True

    def newexten(self, ch: Channel, application: str, data: str) -> None:
        ch.application, ch.app_data = application, data
        self.emit(self.events.newexten(ch, application, data, self.now()))

    # ------------------------------------------------------------------ hangup

    def hangup(self, ch: Channel, cause: int, dial_status: str | None = None) -> None:
        """Hang ``ch`` up and everything that goes with it, in Asterisk's event order."""
        if ch.hungup:
            return
        ch.hungup = True
        ch.cancel_timers()
        cascade: list[Channel] = []
        if ch.dialing is not None:  # caller gone while its Dial() rings: cancel the callee
            callee = self.cancel_dial(ch)
            self.hangup(callee, cause)
        if ch.dialed_by is not None:  # callee failing: the caller's Dial() learns how
            caller, ch.dialed_by = ch.dialed_by, None
            caller.dialing = None
            ch.dial_status = dial_status or dial_status_for_cause(cause)
            self.emit(self.events.dial_end(caller, ch, ch.dial_status, self.now()))
        if ch.bridge is not None:
            cascade += self.dissolve(ch.bridge, leaving=ch)
        for hook in list(ch.before_hangup):
            hook(ch, cause)
        self.emit(self.events.hangup(ch, cause, self.now()))
        self.channels.pop(ch.name, None)
        if ch.local_peer is not None and not ch.local_peer.hungup:
            cascade.append(ch.local_peer)
        for hook in list(ch.after_hangup):
            hook(ch, cause)
        for other in cascade:
            self.hangup(other, cause)

    def cancel_dial(self, caller: Channel) -> Channel:
        """Stop ``caller``'s ringing Dial(): DialEnd CANCEL; returns the callee (still to hang up)."""
        callee = caller.dialing
        assert callee is not None
        caller.dialing = None
        callee.dialed_by = None
        callee.dial_status = DialStatus.CANCEL
        self.emit(self.events.dial_end(caller, callee, DialStatus.CANCEL, self.now()))
        return callee

    def physical(self, ch: Channel) -> Channel:
        """The channel facing the subscriber: for a Local ;1, the trunk leg its ;2 is bridged to."""
        peer = ch.local_peer
        if ch.role is Role.LOCAL_ONE and peer is not None and peer.bridge is not None:
            for member in peer.bridge.members:
                if member is not peer:
                    return member
        return ch

    def party_hangup(self, ch: Channel) -> None:
        """The subscriber behind ``ch`` puts the phone down."""
        if not ch.hungup:
            self.hangup(self.physical(ch), NORMAL_CLEARING)

    # ------------------------------------------------------------------ bridges

    def bridge(self, first: Channel, second: Channel) -> Bridge:
        """A basic two-party bridge; ``first`` enters first (Asterisk: the callee)."""
        bridge = Bridge(uniqueid=self.ids.bridge_id())
        self.emit(self.events.bridge_create(bridge, self.now()))
        for ch in (first, second):
            bridge.members.append(ch)
            ch.bridge = bridge
            self.emit(self.events.bridge_enter(bridge, ch, self.now()))
        return bridge

    def dissolve(self, bridge: Bridge, leaving: Channel, keep: Iterable[Channel] = ()) -> list[Channel]:
        """``leaving`` leaves, the rest are pushed out; returns those who must now hang up."""
        order = [leaving, *[m for m in bridge.members if m is not leaving]]
        for ch in order:
            if ch in bridge.members:
                bridge.members.remove(ch)
            ch.bridge = None
            self.emit(self.events.bridge_leave(bridge, ch, self.now()))
        self.emit(self.events.bridge_destroy(bridge, self.now()))
        kept = list(keep)
        return [ch for ch in order[1:] if ch not in kept and not ch.hungup]

    # ------------------------------------------------------------------ calling a subscriber

    def ring(
        self,
        ch: Channel,
        sub: Subscriber,
        timeout: float,
        *,
        on_ringing: Callable[[], None],
        on_answer: Callable[[], None],
        on_fail: Callable[[str, int], None],
    ) -> None:
        """Play the subscriber's scenario outcome on an outbound channel that was just called."""
        call = self.calls_to[ch.party]
        self.calls_to[ch.party] = call + 1
        outcome = sub.outcome_for(call)

        def ringing() -> None:
            self.set_state(ch, ChannelState.RINGING)
            on_ringing()

        def answer() -> None:
            self.set_state(ch, ChannelState.UP)
            on_answer()

        if outcome in ("answer", "no_answer"):
            self.later([ch], RING_DELAY, ringing)
            if outcome == "answer" and sub.answer_after < timeout:
                self.later([ch], max(sub.answer_after, RING_DELAY), answer)
            else:
                cause = sub.hangup_cause or NO_ANSWER
                self.later([ch], timeout, lambda: on_fail(DialStatus.NOANSWER, cause))
            return
        status, default_cause = FAILURES[outcome]
        cause = sub.hangup_cause or default_cause
        self.later([ch], min(sub.fail_after, timeout), lambda: on_fail(status, cause))

    def dial(
        self,
        caller: Channel,
        target: DialTarget,
        timeout: float,
        *,
        variables: dict[str, str] | None = None,
        on_ringing: Callable[[], None] = lambda: None,
        on_answer: Callable[[Channel], None],
        on_fail: Callable[[str, int], None],
    ) -> Channel:
        """``Dial(target,timeout)`` from ``caller``: DialBegin, the callee's outcome, DialEnd.

        ``on_fail`` runs after the callee's Hangup unless the caller is gone by then.
        """
        callee = self.new_channel(
            self.ids.channel_name(target.name_prefix),
            Role.OUTBOUND,
            target.number,
            state=ChannelState.DOWN,
            context=self.config.outbound_context,
            exten="s",
            linkedid=caller.linkedid,
            caller=(target.number, ""),
            connected=(caller.caller_num, caller.caller_name),
            accountcode=caller.accountcode,
        )
        for name, value in caller.variables.items():  # Asterisk inheritance: _X once, __X forever
            if name.startswith("__"):
                callee.variables[name] = value
            elif name.startswith("_"):
                callee.variables[name[1:]] = value
        for name, value in (variables or {}).items():
            self.set_var(callee, name, value)
        caller.dialing = callee
        callee.dialed_by = caller
        self.emit(self.events.dial_begin(caller, callee, target.dial_string, self.now()))

        def answered() -> None:
            if callee.dialed_by is not caller:
                return
            caller.dialing = None
            callee.dialed_by = None
            callee.dial_status = DialStatus.ANSWER
            caller.set_var("DIALSTATUS", DialStatus.ANSWER)
            self.emit(self.events.dial_end(caller, callee, DialStatus.ANSWER, self.now()))
            on_answer(callee)

        def ended(_ch: Channel, cause: int) -> None:
            if callee.dial_status == DialStatus.ANSWER or caller.hungup:
                return
            status = callee.dial_status or dial_status_for_cause(cause)
            caller.set_var("DIALSTATUS", status)
            on_fail(status, cause)

        callee.after_hangup.append(ended)
        self.ring(
            callee,
            self.scenario.subscriber(target.number),
            timeout,
            on_ringing=on_ringing,
            on_answer=answered,
            on_fail=lambda status, cause: self.hangup(callee, cause, status),
        )
        return callee
