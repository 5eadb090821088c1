"""The Originate action: call a subscriber, report the outcome, start the dialplan on answer.

Two shapes, as in Asterisk:

* ``PJSIP/N@trunk``, ``SIP/trunk/N`` ...: one channel dials N;
* ``Local/N@ctx``: a ;1/;2 pair (LocalBridge); ;2 runs ``ctx`` and Dial()s ``pbx.local_dial``
  for N, ;1 is what the client gets back. Both halves carry the Originate variables.

Either way the dial has no caller (DialBegin/DialEnd with only ``Dest*`` fields, as in the
real click-to-dial transcript) and ends in an ``OriginateResponse`` (Async) whose Reason is
4 answered, 5 busy, 3 rang out (Timeout), 8 congestion, 0 unreachable, 1 hung up meanwhile.
On answer the channel enters the Originate's Context/Exten/Priority (or Application).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from infra.pbx_sim.calls import CallCore
from infra.pbx_sim.causes import ChannelState, DialStatus, OriginateReason, originate_reason
from infra.pbx_sim.channels import Channel, DialTarget, Role, parse_caller_id, parse_dial_target
from infra.pbx_sim.dialplan import Dialplan


@dataclass
class OriginateRequest:
    """The Originate action, decoded. ``timeout`` is in virtual seconds."""

    channel: str
    context: str | None = None
    exten: str | None = None
    priority: int = 1
    application: str | None = None
    data: str = ""
    timeout: float = 30.0
    caller_id: str | None = None
    variables: list[tuple[str, str]] = field(default_factory=list)
    account: str = ""
    channel_id: str | None = None
    other_channel_id: str | None = None
    action_id: str | None = None
    is_async: bool = True


@dataclass(frozen=True)
class OriginateResult:
    success: bool
    reason: OriginateReason
    channel: str
    uniqueid: str


@dataclass
class _Origination:
    req: OriginateRequest
    target: DialTarget
    on_result: Callable[[OriginateResult], None] | None
    channel: Channel | None = None
    done: bool = False


class Originator:
    def __init__(self, core: CallCore, dialplan: Dialplan) -> None:
        self.core = core
        self.dialplan = dialplan

    def originate(
        self, req: OriginateRequest, on_result: Callable[[OriginateResult], None] | None = None
    ) -> None:
        """Start an Originate; the result arrives as an OriginateResponse (async) and/or ``on_result``."""
        orig = _Origination(req, parse_dial_target(req.channel), on_result)
        if req.channel_id and self.core.uniqueid_in_use(req.channel_id):
            self._report(orig, success=False, reason=OriginateReason.FAILED)
        elif orig.target.is_local:
            self._local(orig)
        else:
            self._direct(orig)

    def _watch(self, orig: _Origination, ch: Channel) -> None:
        """Until answered, the channel's end is the Originate's failure: DialEnd, then the report."""
        core = self.core

        def before(_ch: Channel, _cause: int) -> None:
            if not orig.done:
                ch.dial_status = ch.dial_status or DialStatus.CANCEL
                core.emit(core.events.dial_end(None, ch, ch.dial_status, core.now()))

        def after(_ch: Channel, _cause: int) -> None:
            if not orig.done:
                orig.done = True
                reason = originate_reason(ch.dial_status or DialStatus.CANCEL)
                self._report(orig, success=False, reason=reason)

        ch.before_hangup.append(before)
        ch.after_hangup.append(after)

    def _direct(self, orig: _Origination) -> None:
        core, req, target = self.core, orig.req, orig.target
        cid = parse_caller_id(req.caller_id)
        ch = core.new_channel(
            core.ids.channel_name(target.name_prefix),
            Role.ORIGINATED,
            target.number,
            state=ChannelState.DOWN,
            context=core.config.outbound_context,
            exten="s",
            uniqueid=req.channel_id,
            caller=cid,
            connected=cid,
            accountcode=req.account,
        )
        orig.channel = ch
        for name, value in req.variables:
            core.set_var(ch, name, value)
        core.emit(core.events.dial_begin(None, ch, target.dial_string, core.now()))
        self._watch(orig, ch)

        def failed(status: str, cause: int) -> None:
            ch.dial_status = status
            core.hangup(ch, cause)

        core.ring(
            ch,
            core.scenario.subscriber(target.number),
            req.timeout,
            on_ringing=lambda: None,
            on_answer=lambda: self._answered(orig),
            on_fail=failed,
        )

    def _local(self, orig: _Origination) -> None:
        core, req, target = self.core, orig.req, orig.target
        context = target.context or "default"
        cid = parse_caller_id(req.caller_id)
        one_name, two_name = core.ids.local_pair(target.name_prefix)
        halves = []
        for name, role, state, uniqueid in (
            (one_name, Role.LOCAL_ONE, ChannelState.DOWN, req.channel_id),
            (two_name, Role.LOCAL_TWO, ChannelState.RING, req.other_channel_id),
        ):
            halves.append(
                core.new_channel(
                    name,
                    role,
                    target.number,
                    state=state,
                    context=context,
                    exten=target.number,
                    uniqueid=uniqueid,
                    linkedid=halves[0].linkedid if halves else None,
                    caller=cid,
                    connected=cid,
                    accountcode=req.account,
                )
            )
        one, two = halves
        one.local_peer, two.local_peer = two, one
        orig.channel = one
        for name, value in req.variables:
            core.set_var(one, name, value)
        two.variables.update(one.variables)  # chan_local copies them when the pair is called
        optimize = "n" not in target.local_options
        core.emit(core.events.local_bridge(one, two, context, target.number, optimize, core.now()))
        core.emit(core.events.dial_begin(None, one, target.dial_string, core.now()))
        self._watch(orig, one)

        trunk = parse_dial_target(core.config.local_dial.format(number=target.number))
        core.newexten(two, "Dial", f"{trunk.tech}/{trunk.dial_string},{int(req.timeout)}")

        def answered(callee: Channel) -> None:
            core.set_state(two, ChannelState.UP)
            core.set_state(one, ChannelState.UP)
            core.bridge(callee, two)
            self._answered(orig)

        def failed(status: str, cause: int) -> None:
            one.dial_status = status
            core.hangup(two, cause)

        core.dial(
            two,
            trunk,
            req.timeout,
            on_ringing=lambda: core.set_state(one, ChannelState.RINGING),
            on_answer=answered,
            on_fail=failed,
        )

    def _answered(self, orig: _Origination) -> None:
        core, ch, req = self.core, orig.channel, orig.req
        assert ch is not None
        orig.done = True
        ch.dial_status = DialStatus.ANSWER
        core.emit(core.events.dial_end(None, ch, DialStatus.ANSWER, core.now()))
        self._report(orig, success=True, reason=OriginateReason.ANSWERED)
        if req.application:
            core.newexten(ch, req.application, req.data)
            self.dialplan.arm_idle(ch)
        else:
            self.dialplan.enter(ch, req.context or "default", req.exten or "s", req.priority)

    def _report(self, orig: _Origination, *, success: bool, reason: OriginateReason) -> None:
        core, req, ch = self.core, orig.req, orig.channel
        cid_num, cid_name = parse_caller_id(req.caller_id)
        channel_name = ch.name if ch is not None else req.channel
        uniqueid = ch.uniqueid if ch is not None else (req.channel_id or "<null>")
        if req.is_async:
            core.emit(
                core.events.originate_response(
                    action_id=req.action_id,
                    success=success,
                    channel_name=channel_name,
                    context=req.context,
                    exten=req.exten,
                    application=req.application,
                    data=req.data,
                    reason=int(reason),
                    uniqueid=uniqueid,
                    caller_num=cid_num,
                    caller_name=cid_name,
                    channel=ch,
                    at=core.now(),
                )
            )
        if orig.on_result is not None:
            orig.on_result(OriginateResult(success, reason, channel_name, uniqueid))
