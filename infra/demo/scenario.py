"""The demo's traffic and what must come of it. Pure: a seed in, the same plan out.

The carrier is the sample (``examples/carrier.yaml``) with three changes, so a demo takes about a
minute instead of the sample's production timers: Retry Time 5 s, Wait Time 10 s, the initiation
rings 1 s; and a population of demo subscribers (users with devices, calling cards, web users) whose
ids, PINs and numbers are unique to the run, so runs on one stack never meet. Every callback has its
own caller number, which the simulator plays as the plan says (answers, busy first, keys a PIN ...),
and its expectations: the final state and reason, how often its number is originated, its finished
legs and who pays each (seed, "Who pays").
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from schemas.callback import PayerKind
from schemas.carrier_config import CarrierConfig

PIN_DID = "2349012345678"  # sample: device PIN, dropped with 17
ANI_DID = "18005550199"  # sample: ANI, dropped with 21
CARD_DID = "2349012345600"  # sample: card number + PIN, dropped with 19
CALLBACK_USER = "cb-owner"

#: the sample's production timers, shortened so the demo takes a minute
DEMO_TIMERS = {"retry_time_s": 5, "wait_time_s": 10, "initiation_ring_s": 1, "max_retries": 2}
USER_BALANCE = Decimal("100.00")
CARD_BALANCE = Decimal("50.00")
LOW_BALANCE = Decimal("0.01")


class Kind(StrEnum):
    ANI = "ANI callback"
    PIN = "device PIN callback"
    CARD = "card number + PIN callback"
    PINLESS = "pinless card callback"
    WEB = "web callback"
    A_RETRY = "leg A busy, then answered"
    A_NO_ANSWER = "leg A never answers"
    REFUSED_ORIGIN = "origin not in the Callback Tariff"
    NO_CALLER_ID = "no caller ID"
    WRONG_PIN = "wrong PIN three times"
    B_BUSY = "destination busy"
    B_UNREACHABLE = "destination unreachable"
    LOW_BALANCE = "balance too small"


#: share of each kind in a demo (weights)
MIX: dict[Kind, int] = {
    Kind.PIN: 24,
    Kind.CARD: 12,
    Kind.ANI: 12,
    Kind.PINLESS: 4,
    Kind.WEB: 5,
    Kind.A_RETRY: 10,
    Kind.A_NO_ANSWER: 4,
    Kind.REFUSED_ORIGIN: 5,
    Kind.NO_CALLER_ID: 4,
    Kind.WRONG_PIN: 6,
    Kind.B_BUSY: 5,
    Kind.B_UNREACHABLE: 4,
    Kind.LOW_BALANCE: 5,
}


@dataclass(frozen=True)
class Expected:
    state: str
    reason: str | None  # None: any reason
    originates: int
    #: leg name ('initiation:0', 'a:1', 'b:1') -> payer key ('user:x', 'card:n', 'callback_user:x')
    payers: dict[str, str]


@dataclass(frozen=True)
class Planned:
    index: int
    kind: Kind
    at_s: float
    number: str | None  # caller (DID) or number to call back (web); None = withheld caller ID
    did: str | None  # None: a web request
    destination: str | None
    api_key: str | None
    expected: Expected


@dataclass
class DemoPlan:
    tag: str
    carrier: dict[str, Any]
    subscribers: dict[str, dict[str, Any]]
    callbacks: list[Planned]
    #: notes on what the demo changed in the sample carrier, for the report
    changes: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return max((c.at_s for c in self.callbacks), default=0.0)


def api_key_for(tag: str, i: int) -> str:
    return f"demo-{tag}-{i}"


def plan(sample: CarrierConfig, *, callbacks: int, seed: int, over_s: float, tag: str) -> DemoPlan:
    """``callbacks`` callbacks placed evenly over ``over_s`` seconds, kinds mixed by ``MIX``."""
    rng = random.Random(seed)
    block = f"{int(hashlib.sha256(tag.encode()).hexdigest(), 16) % 10**5:05d}"
    kinds = _kinds(callbacks, rng)
    n_users = max(4, callbacks // 12)
    n_cards = max(2, callbacks // 25)
    users = [f"demo-{tag}-u{i}" for i in range(n_users)]
    pins = {u: f"7{block}{i:03d}" for i, u in enumerate(users)}
    cards = [f"89{block}{i:03d}" for i in range(n_cards)]
    card_pins = {c: f"6{block}{i:03d}" for i, c in enumerate(cards)}
    low_user = f"demo-{tag}-low"
    registered: dict[str, list[str]] = {u: [] for u in users}
    pinless: dict[str, list[str]] = {c: [] for c in cards}

    subscribers: dict[str, dict[str, Any]] = {}
    dest_ok, dest_busy, dest_unreach = f"349{block}01", f"349{block}02", f"349{block}03"
    subscribers[dest_ok] = {"answer_after": 1.0, "talk_seconds": 600}
    subscribers[dest_busy] = {"outcome": "busy", "fail_after": 0.5}
    subscribers[dest_unreach] = {"outcome": "unreachable", "hangup_cause": 1, "fail_after": 0.5}

    planned: list[Planned] = []
    step = over_s / max(1, callbacks)
    for i, kind in enumerate(kinds):
        number = f"2348{block}{i:04d}"
        user = users[i % n_users]
        card = cards[i % n_cards]
        at_s = round(i * step + rng.uniform(0, step * 0.5), 3)
        talk = round(rng.uniform(2.0, 8.0), 1)
        base = {"answer_after": 1.0, "input_delay": 0.5, "talk_seconds": talk, "fail_after": 0.5}
        owner = f"{PayerKind.CALLBACK_USER.value}:{CALLBACK_USER}"
        as_user, as_card = f"user:{user}", f"card:{card}"
        did: str | None = PIN_DID
        destination: str | None = None
        api_key: str | None = None
        behaviour = {**base, "pin": pins[user], "destination": dest_ok}
        if kind is Kind.ANI:
            did = ANI_DID
            registered[user].append(number)
            behaviour = {**base, "destination": dest_ok}
            expected = Expected(
                "completed", None, 1, {"initiation:0": as_user, "a:1": as_user, "b:1": as_user}
            )
        elif kind is Kind.PIN:
            expected = Expected("completed", None, 1, {"initiation:0": owner, "a:1": as_user, "b:1": as_user})
        elif kind is Kind.CARD:
            did = CARD_DID
            behaviour = {**base, "card_number": card, "pin": card_pins[card], "destination": dest_ok}
            expected = Expected("completed", None, 1, {"initiation:0": owner, "a:1": as_card, "b:1": as_card})
        elif kind is Kind.PINLESS:
            did = CARD_DID
            pinless[card].append(number)
            behaviour = {**base, "destination": dest_ok}
            expected = Expected(
                "completed", None, 1, {"initiation:0": as_card, "a:1": as_card, "b:1": as_card}
            )
        elif kind is Kind.WEB:
            did, destination, api_key = None, dest_ok, api_key_for(tag, i % n_users)
            user = users[i % n_users]
            as_user = f"user:{user}"
            behaviour = dict(base)
            expected = Expected("completed", None, 1, {"a:1": as_user, "b:1": as_user})
        elif kind is Kind.A_RETRY:
            busy = 1 + i % 2
            behaviour = {**behaviour, "outcomes": ["busy"] * busy + ["answer"]}
            payers = {"initiation:0": owner, f"a:{busy + 1}": as_user, "b:1": as_user}
            payers.update({f"a:{n}": owner for n in range(1, busy + 1)})  # not yet authenticated
            expected = Expected("completed", None, busy + 1, payers)
        elif kind is Kind.A_NO_ANSWER:
            attempts = 1 + DEMO_TIMERS["max_retries"]
            behaviour = {**base, "outcome": "no_answer"}
            payers = {"initiation:0": owner} | {f"a:{n}": owner for n in range(1, attempts + 1)}
            expected = Expected("failed_a", None, attempts, payers)
        elif kind is Kind.REFUSED_ORIGIN:
            number = f"44{block}{i:04d}"
            behaviour = dict(base)
            expected = Expected("rejected", "origin_not_allowed", 0, {"initiation:0": owner})
        elif kind is Kind.NO_CALLER_ID:
            number = None
            behaviour = {}
            expected = Expected("rejected", "no_caller_id", 0, {"initiation:0": owner})
        elif kind is Kind.WRONG_PIN:
            behaviour = {**base, "pin": ["000000", "111111", "222222"]}
            expected = Expected("auth_failed", None, 1, {"initiation:0": owner, "a:1": owner})
        elif kind is Kind.B_BUSY:
            behaviour = {**behaviour, "destination": dest_busy}
            expected = Expected(
                "failed_b", "destination_busy", 1, {"initiation:0": owner, "a:1": as_user, "b:1": as_user}
            )
        elif kind is Kind.B_UNREACHABLE:
            behaviour = {**behaviour, "destination": dest_unreach}
            expected = Expected(
                "failed_b",
                "destination_chanunavail",
                1,
                {"initiation:0": owner, "a:1": as_user, "b:1": as_user},
            )
        else:  # LOW_BALANCE
            behaviour = {**base, "pin": pins.get(low_user, f"5{block}999"), "destination": dest_ok}
            expected = Expected(
                "failed_b", "insufficient_balance", 1, {"initiation:0": owner, "a:1": f"user:{low_user}"}
            )
        if number is not None:
            subscribers[number] = behaviour
        planned.append(Planned(i, kind, at_s, number, did, destination, api_key, expected))

    carrier = _carrier(sample, tag, users, pins, registered, cards, card_pins, pinless, low_user, block)
    changes = [
        "timers shortened for a one-minute demo: "
        + ", ".join(f"{k} {v}" for k, v in DEMO_TIMERS.items() if k != "max_retries")
        + f", Max Retries {DEMO_TIMERS['max_retries']} (system; the ANI dial plan keeps its own)",
        f"{n_users} demo users ({USER_BALANCE} each, device PIN, web API key), one with {LOW_BALANCE}; "
        f"{n_cards} demo calling cards ({CARD_BALANCE} each); numbers and PINs unique to run {tag}",
    ]
    return DemoPlan(tag, carrier, subscribers, planned, changes)


def _kinds(n: int, rng: random.Random) -> list[Kind]:
    """``n`` kinds in the proportions of ``MIX`` (largest remainder), shuffled."""
    total = sum(MIX.values())
    exact = {k: n * w / total for k, w in MIX.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    kinds = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(kinds)
    return kinds


def _carrier(
    sample: CarrierConfig,
    tag: str,
    users: list[str],
    pins: dict[str, str],
    registered: dict[str, list[str]],
    cards: list[str],
    card_pins: dict[str, str],
    pinless: dict[str, list[str]],
    low_user: str,
    block: str,
) -> dict[str, Any]:
    data = sample.model_dump(mode="json")
    data["callback_settings"].update(DEMO_TIMERS)
    for did in data["dids"]:
        if did.get("settings") and did["settings"].get("wait_time_s"):
            did["settings"]["wait_time_s"] = DEMO_TIMERS["wait_time_s"]
    for i, user in enumerate(users):
        data["users"].append(
            {
                "user_id": user,
                "name": f"Demo subscriber {i}",
                "tariff_id": "retail-usd",
                "balance": str(USER_BALANCE),
                "api_key_sha256": hashlib.sha256(api_key_for(tag, i).encode()).hexdigest(),
            }
        )
        data["devices"].append(
            {
                "device_id": f"{user}-phone",
                "user_id": user,
                "pin": pins[user],
                "registered_numbers": registered[user],
            }
        )
    data["users"].append(
        {
            "user_id": low_user,
            "name": "Demo subscriber, nearly empty",
            "tariff_id": "retail-usd",
            "balance": str(LOW_BALANCE),
        }
    )
    data["devices"].append({"device_id": f"{low_user}-phone", "user_id": low_user, "pin": f"5{block}999"})
    for card in cards:
        data["cards"].append(
            {
                "number": card,
                "pin": card_pins[card],
                "tariff_id": "cards-usd",
                "balance": str(CARD_BALANCE),
                "pinless_numbers": pinless[card],
            }
        )
    return data
