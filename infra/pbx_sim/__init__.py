"""PBX simulator: an asyncio server that speaks Asterisk 18's Manager Interface (AMI).

No Asterisk package exists for this machine, so integration tests, end-to-end tests and
the demo talk to this simulator instead. It is meant to be indistinguishable from
Asterisk for an AMI client such as panoramisk: same banner, framing, responses, event
names, field names and order (checked against real transcripts in
``tests/fixtures/asterisk-ami``), while a scenario decides what each subscriber
does. Run it with ``callback pbx-sim --scenario examples/pbx-scenario.yaml``.

Modules, pure ones first: ``protocol`` (framing), ``causes`` (code tables), ``clock``
(virtual time), ``scenario`` (validated behaviour), ``channels`` (state and naming),
``events`` (event layouts), ``calls`` (channel/dial/bridge state machine), ``dialplan``
(what each context does), ``originate``, ``pbx`` (the facade the AMI layer uses),
``actions`` (AMI actions), ``action_log``, ``load``; then the I/O: ``server`` (asyncio TCP),
``background`` (the server on a thread, for synchronous tests) and ``cli``.

Contract for the AMI producer: IVR input
=========================================

When a leg-A channel enters an input context (defaults: ``callback-pin`` -> prompt
``pin``, ``callback-destination`` -> ``destination``, ``callback-card-number`` ->
``card_number``; ``pbx.input_contexts`` in the scenario), by an AMI ``Redirect``
(``Context: callback-pin``, ``Exten: s``, ``Priority: 1``) or as the Originate's Context,
the simulator answers it if needed, plays the prompt and, after the subscriber's
``input_delay``, raises::

    Event: UserEvent
    Privilege: user,all
    SystemName: pbx-sim
    Channel: Local/37060000001@callback-out-0000000a;1   <- the channel that was redirected
    ChannelState: 6
    ChannelStateDesc: Up
    CallerIDNum: ...                       <- ... the full channel snapshot ...
    Context: callback-pin
    Exten: s
    Priority: 2
    Uniqueid: cbo-1f3a...                  <- the Originate's ChannelId
    Linkedid: cbo-1f3a...
    ChanVariable: CALLBACK_ID=cb-42        <- one line per manager.conf channelvars entry
    ChanVariable: LEG=A
    ChanVariable: ATTEMPT=1
    UserEvent: CallbackInput
    Prompt: pin                            <- pin | destination | card_number | other names
    Digits: 1234                           <- keyed digits, 0-9 * #; empty on timeout
    Status: OK                             <- OK, or TIMEOUT when nothing was keyed
    Attempt: 1                             <- how many times this prompt played on the channel

A real Asterisk produces the same with ``Read(DIGITS,...)`` and ``UserEvent(CallbackInput,
Prompt: pin,Digits: ${DIGITS},Status: ...,Attempt: ${INC(PIN_TRIES)})``. Each time a prompt
plays again on a channel the subscriber keys the next entry of its scenario list (a wrong
PIN, then the right one). The channel then waits for the next Redirect; a subscriber left
waiting ``idle_hangup`` seconds hangs up (Cause 16).

Channel variables: Asterisk 12+ writes them on channel events as ``ChanVariable:
NAME=value`` (a repeated header: panoramisk gives a list, ``event.getdict('ChanVariable')``
a dict; ``DestChanVariable`` for the callee of DialBegin/DialEnd), and on
OriginateResponse, raised the pre-stasis way, as ``ChanVariable(<channel name>):
NAME=value``. The simulator does the same.

Leg B
=====

``Redirect`` leg A to ``pbx.dial_context`` (default ``callback-dial-b``) with ``Exten`` =
the destination number: the simulator runs ``Dial(PJSIP/<number>@carrier,<timeout>)`` from
leg A (``pbx.dial_channel``; timeout ``pbx.dial_timeout`` or leg A's
``CALLBACK_DIAL_TIMEOUT`` variable): DialBegin (Channel = leg A, Dest = leg B), leg B's
outcome from the scenario, DialEnd with ``DialStatus`` ANSWER, BUSY, NOANSWER, CONGESTION
or CHANUNAVAIL. Leg B inherits ``CALLBACK_ID`` and ``ATTEMPT`` from leg A and gets
``LEG=B`` (VarSet events before DialBegin). On ANSWER: BridgeCreate, BridgeEnter (B, then
A). The call ends when either party's ``talk_seconds`` runs out or after leg A's
``CALLBACK_MAX_SECONDS`` (Setvar it before the Redirect; a real dialplan passes it to
Dial's ``S()`` option): BridgeLeave x2, BridgeDestroy, Hangup x2 (Cause 16). If leg B
fails, leg A stays up waiting for a Redirect, e.g. to ``callback-busy-ivr`` or
``callback-failed-ivr``, which play for ``pbx.playback_contexts`` seconds and hang up with
Cause 16.

Originate ``Local/N@callback-out`` behaves like Asterisk's Local channels: ;1 (the
OriginateResponse channel, Uniqueid = ChannelId) and ;2 both carry the variables, ;2 dials
``PJSIP/N@carrier`` and is bridged to it; all three hang up together. Consumers must not
count a leg three times.

The equivalent extensions.conf, for running the pipeline against a real Asterisk::

    [callback-out]
    exten => _X.,1,Dial(PJSIP/${EXTEN}@carrier)
    [callback-a]            ; leg A answered: wait for the processors' Redirect
    exten => s,1,Answer()
     same => n,Wait(120)
    [callback-pin]
    exten => s,1,Read(DIGITS,callback/pin,,,,10)
     same => n,UserEvent(CallbackInput,Prompt: pin,Digits: ${DIGITS},Status: ...,Attempt: ...)
     same => n,Wait(120)
    [callback-destination]  ; same with Prompt: destination
    [callback-dial-b]
    exten => _X.,1,Set(__CALLBACK_ID=${CALLBACK_ID})
     same => n,Set(__ATTEMPT=${ATTEMPT})
     same => n,Set(OPTS=b(callback-leg-b^s^1)S(${CALLBACK_MAX_SECONDS}))
     same => n,Dial(PJSIP/${EXTEN}@carrier,${CALLBACK_DIAL_TIMEOUT},${OPTS})
     same => n,Wait(120)
    [callback-leg-b]
    exten => s,1,Set(LEG=B)
     same => n,Return()
    [callback-busy-ivr]     ; Exten = the Busy IVR setting (the sound to play)
    exten => _[a-zA-Z0-9].,1,Playback(callback/${EXTEN})
     same => n,Hangup(16)
    [callback-failed-ivr]   ; Exten = the Failed IVR setting
    exten => _[a-zA-Z0-9].,1,Playback(callback/${EXTEN})
     same => n,Hangup(16)

Timing: scenario times are virtual seconds; ``--speed`` divides every delay, and
Uniqueids, ``Ping`` and (with ``pbx.timestamp_events``) ``Timestamp`` headers run on the
same virtual clock. Scenario inbound calls and load start when the first AMI client
receiving call events logs in.
"""

from infra.pbx_sim.background import BackgroundSimulator
from infra.pbx_sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from infra.pbx_sim.server import PbxSimulator, SimulatorOptions

__all__ = [
    "BackgroundSimulator",
    "PbxSimulator",
    "Scenario",
    "ScenarioError",
    "SimulatorOptions",
    "load_scenario",
    "parse_scenario",
]
