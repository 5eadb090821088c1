"""The simulated PBX as the AMI layer sees it: one object per AMI operation.

:class:`Pbx` wires the call state machine (``calls.py``), the emulated dialplan
(``dialplan.py``) and Originate (``originate.py``) together and exposes what the AMI
actions and the server need: originate, hangup, redirect, variables, inbound calls.
Like its parts it does no I/O, so ``Pbx(scenario, ManualScheduler(), events.append)``
runs whole calls in a unit test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from infra.pbx_sim.calls import CallCore, Publish
from infra.pbx_sim.causes import NORMAL_CLEARING
from infra.pbx_sim.channels import Channel
from infra.pbx_sim.clock import Scheduler, Timer
from infra.pbx_sim.dialplan import Dialplan
from infra.pbx_sim.originate import OriginateRequest, OriginateResult, Originator
from infra.pbx_sim.scenario import InboundCall, Scenario

__all__ = ["OriginateRequest", "OriginateResult", "Pbx"]


class Pbx:
    def __init__(self, scenario: Scenario, scheduler: Scheduler, publish: Publish) -> None:
        self.core = CallCore(scenario, scheduler, publish)
        self.dialplan = Dialplan(self.core)
        self.originator = Originator(self.core, self.dialplan)
        self.scenario = scenario
        self.config = scenario.pbx
        self.scheduler = scheduler
        self.global_vars: dict[str, str] = {}
        self._scheduled: list[Timer] = []

    @property
    def channels(self) -> dict[str, Channel]:
        return self.core.channels

    def find(self, name_or_uniqueid: str) -> Channel | None:
        return self.core.find(name_or_uniqueid)

    def originate(
        self, req: OriginateRequest, on_result: Callable[[OriginateResult], None] | None = None
    ) -> None:
        self.originator.originate(req, on_result)

    def hangup(self, name: str, cause: int | None) -> bool:
        """The Hangup action: SoftHangupRequest, then the channel goes with ``cause`` (16 if none)."""
        ch = self.find(name)
        if ch is None:
            return False
        self.core.emit(self.core.events.soft_hangup_request(ch, cause, self.core.now()))
        self.core.hangup(ch, cause or NORMAL_CLEARING)
        return True

    def can_redirect(self, name: str) -> bool:
        ch = self.find(name)
        return ch is not None and self.dialplan.can_redirect(ch)

    def redirect(
        self,
        name: str,
        context: str,
        exten: str,
        priority: int = 1,
        extra_name: str | None = None,
        extra_target: tuple[str, str, int] | None = None,
    ) -> bool:
        """The Redirect action: leave bridge or dial, continue at ``context,exten,priority``.

        With ``extra_name`` (ExtraChannel) both channels move, to ``extra_target`` or the
        same place, and neither is hung up by the other leaving their bridge.
        """
        ch = self.find(name)
        extra = self.find(extra_name) if extra_name else None
        if ch is None or not self.dialplan.can_redirect(ch) or (extra_name and extra is None):
            return False
        moves = [(ch, (context, exten, priority))]
        if extra is not None and extra is not ch:
            moves.append((extra, extra_target or (context, exten, priority)))
        self.dialplan.redirect(moves)
        return True

    def set_var(self, channel: str | None, name: str, value: str) -> bool:
        """Setvar: a channel variable (VarSet), ``CALLERID(...)`` (NewCallerid), or a global."""
        if not channel:
            self.global_vars[name] = value
            return True
        ch = self.find(channel)
        if ch is None:
            return False
        if name.upper().startswith("CALLERID(") and name.endswith(")"):
            if self.core.write_callerid(ch, name[len("CALLERID(") : -1].lower(), value):
                return True
        self.core.set_var(ch, name, value)
        return True

    def get_var(self, channel: str | None, name: str) -> tuple[bool, str | None]:
        """(channel found, value): channel variables, a few dialplan functions, then globals."""
        if not channel:
            return True, self.global_vars.get(name)
        ch = self.find(channel)
        if ch is None:
            return False, None
        value = ch.get_var(name)
        if value is None:
            functions = {
                "CHANNEL": ch.name,
                "UNIQUEID": ch.uniqueid,
                "LINKEDID": ch.linkedid,
                "CONTEXT": ch.context,
                "EXTEN": ch.exten,
                "CALLERID(num)": ch.caller_num,
                "CALLERID(name)": ch.caller_name,
                "CHANNEL(state)": ch.state.desc,
            }
            value = functions.get(name, self.global_vars.get(name))
        return True, value

    def start_inbound(self, ani: str | None, did: str, ring_timeout: float | None = None) -> Channel:
        return self.dialplan.inbound(ani, did, ring_timeout)

    def schedule_inbound(self, calls: Iterable[InboundCall], offset: float = 0.0) -> None:
        """Have each initiation call arrive ``offset + call.at`` virtual seconds from now."""
        for call in calls:
            timer = self.scheduler.call_later(
                offset + call.at,
                lambda c=call: self.start_inbound(c.ani, c.did, c.ring_timeout),
            )
            self._scheduled.append(timer)

    def shutdown(self) -> None:
        """Stop every timer and forget every call, silently: the PBX process is going away."""
        for timer in self._scheduled:
            timer.cancel()
        self._scheduled.clear()
        for ch in list(self.core.channels.values()):
            ch.cancel_timers()
        self.core.channels.clear()
