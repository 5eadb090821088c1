"""Synthetic reference data and finished legs, for the benchmark and the integration tests.

Deterministic for a given seed, and namespaced by a run id so runs on a shared stack (other
tests, other benchmarks) never touch each other's payers, tariffs or callbacks.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from confluent_kafka import Producer

from callback.kafka_io import producer_config
from schemas.callback import (
    Disposition,
    FinishedLeg,
    LegType,
    Payer,
    PayerKind,
    SessionState,
    leg_id_for,
)
from schemas.reference import AuthMethod, CallingCard, Rate, Tariff, User
from schemas.topics import CONFIG_CARDS, CONFIG_TARIFFS, CONFIG_USERS

#: Destinations of the synthetic tariff: (prefix, name, rate/min, fee, increment, minimal, grace).
RATES = (
    ("234", "Nigeria", "0.20", "0", 60, 0, 0),
    ("2348", "Nigeria Mobile", "0.22", "0", 60, 0, 0),
    ("34", "Spain", "0.08", "0", 1, 0, 0),
    ("346", "Spain Mobile", "0.12", "0.01", 30, 30, 0),
    ("1", "USA/Canada", "0.015", "0", 6, 0, 3),
    ("44", "United Kingdom", "0.03", "0", 1, 0, 0),
    ("49", "Germany", "0.0425", "0.005", 6, 30, 0),
)
NUMBERS = (
    "2341234567",
    "2348031234567",
    "34911234567",
    "34612345678",
    "12125550142",
    "442071234567",
    "4930123456",
)


def tariffs(run: str) -> list[Tariff]:
    retail = Tariff(
        tariff_id=f"{run}-retail",
        currency="USD",
        precision=4,
        rates=[
            Rate(
                prefix=p,
                destination=n,
                rate_per_minute=Decimal(r),
                connection_fee=Decimal(f),
                increment_s=i,
                minimal_time_s=m,
                grace_time_s=g,
            )
            for p, n, r, f, i, m, g in RATES
        ],
    )
    origins = Tariff(
        tariff_id=f"{run}-origins",
        currency="USD",
        precision=4,
        rates=[
            Rate(prefix="234", destination="Nigeria", rate_per_minute=Decimal("0.20"), increment_s=60),
            Rate(
                prefix="1",
                destination="USA/Canada",
                rate_per_minute=Decimal("0.01"),
                increment_s=6,
                minimal_time_s=6,
            ),
        ],
    )
    return [retail, origins]


def users(run: str, n: int) -> list[User]:
    owner = User(
        user_id=f"{run}-owner",
        name="Callback User",
        tariff_id=f"{run}-origins",
        prepaid=False,
        credit_limit=Decimal("1000000"),
    )
    return [owner] + [
        User(user_id=f"{run}-u{i}", name=f"user {i}", tariff_id=f"{run}-retail", balance=Decimal("1000.00"))
        for i in range(n)
    ]


def cards(run: str, n: int) -> list[CallingCard]:
    base = zlib.crc32(run.encode()) % 10**8  # stable across processes (hash() is salted)
    return [
        CallingCard(number=f"{base + i:010d}", pin="1234", tariff_id=f"{run}-retail", balance=Decimal("500"))
        for i in range(n)
    ]


def payers(run: str, n_users: int, n_cards: int) -> list[Payer]:
    return [Payer(kind=PayerKind.USER, id=u.user_id) for u in users(run, n_users)[1:]] + [
        Payer(kind=PayerKind.CARD, id=c.number) for c in cards(run, n_cards)
    ]


def reference_records(
    run: str, n_users: int = 20, n_cards: int = 10, tariff_list: list[Tariff] | None = None
) -> list[tuple[str, bytes, bytes]]:
    """(catalogue topic, key, value) of this run's tariffs (``tariff_list`` in their place, e.g. the
    same tariffs with other destination names), users and cards."""
    out = [
        (CONFIG_TARIFFS.name, t.tariff_id.encode(), t.model_dump_json().encode())
        for t in (tariffs(run) if tariff_list is None else tariff_list)
    ]
    out += [
        (CONFIG_USERS.name, u.user_id.encode(), u.model_dump_json().encode()) for u in users(run, n_users)
    ]
    out += [(CONFIG_CARDS.name, c.number.encode(), c.model_dump_json().encode()) for c in cards(run, n_cards)]
    return out


def publish_reference(
    run: str,
    n_users: int = 20,
    n_cards: int = 10,
    timeout_s: float = 30.0,
    topics: dict[str, str] | None = None,
    tariff_list: list[Tariff] | None = None,
) -> None:
    """Put this run's tariffs, users and cards on the compacted config topics (one transaction);
    ``topics`` maps catalogue names to the topics to write instead (a benchmark's copies)."""
    producer = Producer(producer_config(f"callback-loadgen-{run}"))
    producer.init_transactions(timeout_s)
    producer.begin_transaction()
    for topic, key, value in reference_records(run, n_users, n_cards, tariff_list):
        producer.produce((topics or {}).get(topic, topic), value, key)
    producer.commit_transaction(timeout_s)


def make_legs(
    run: str, n: int, *, n_users: int = 20, n_cards: int = 10, seed: int = 7, start: datetime | None = None
) -> Iterator[FinishedLeg]:
    """``n`` finished legs of realistic callbacks: initiation, A attempts (some failing, then a
    retry), B; some A legs unauthenticated and paid by the Callback User."""
    rng = random.Random(seed)
    who = payers(run, n_users, n_cards)
    owner = Payer(kind=PayerKind.CALLBACK_USER, id=f"{run}-owner")
    t0 = start or datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    made = 0
    c = 0
    while made < n:
        cb = f"{run}-{c}"
        c += 1
        at = t0 + timedelta(milliseconds=c * 37)
        payer = rng.choice(who)
        origin = rng.choice(("2341234567", "12125550142"))
        authenticated = rng.random() < 0.9
        final = SessionState.COMPLETED if authenticated else SessionState.AUTH_FAILED
        legs = [
            _leg(cb, LegType.INITIATION, 0, origin, at, None, 3000, Disposition.NO_ANSWER, owner, final, 17)
        ]
        attempt = 0
        if rng.random() < 0.2:  # first attempt not answered: retried
            legs.append(
                _leg(cb, LegType.A, 0, origin, at, None, 30_000, Disposition.NO_ANSWER, owner, final, 19)
            )
            attempt = 1
        a_talk = rng.randint(0, 600_000)
        legs.append(
            _leg(
                cb,
                LegType.A,
                attempt,
                origin,
                at,
                4000,
                a_talk,
                Disposition.ANSWERED,
                payer if authenticated else owner,
                final,
                16,
            )
        )
        if authenticated:
            disp = rng.choice((Disposition.ANSWERED,) * 4 + (Disposition.BUSY, Disposition.NO_ANSWER))
            talk = rng.randint(0, max(a_talk - 5000, 0)) if disp is Disposition.ANSWERED else 0
            legs.append(
                _leg(
                    cb,
                    LegType.B,
                    0,
                    rng.choice(NUMBERS),
                    at,
                    2000 if disp is Disposition.ANSWERED else None,
                    talk if disp is Disposition.ANSWERED else 5000,
                    disp,
                    payer,
                    final,
                    16 if disp is Disposition.ANSWERED else 17,
                )
            )
        for leg in legs:
            if made == n:
                return
            made += 1
            yield leg


def _leg(
    cb: str,
    leg: LegType,
    attempt: int,
    dst: str,
    at: datetime,
    ring_ms: int | None,
    talk_ms: int,
    disp: Disposition,
    payer: Payer,
    final: SessionState,
    cause: int,
) -> FinishedLeg:
    answered = at + timedelta(milliseconds=ring_ms) if ring_ms is not None else None
    end = (answered or at) + timedelta(milliseconds=talk_ms)
    return FinishedLeg(
        source="loadgen",
        leg_id=leg_id_for(cb, leg, attempt),
        callback_id=cb,
        leg=leg,
        attempt=attempt,
        pbx_id="pbx1",
        did="2349012345678",
        src=dst if leg is not LegType.B else None,
        dst=dst,
        started_at=at,
        answered_at=answered,
        ended_at=end,
        disposition=disp,
        q850_cause=cause,
        payer=payer,
        auth_method=AuthMethod.DEVICE_PIN if payer.kind is PayerKind.USER else AuthMethod.CARD_NUMBER_PIN,
        final_state=final,
    )


def produce(topic: str, records: Iterable[tuple[bytes, bytes]], timeout_s: float = 60.0) -> int:
    """Produce (key, value) records with the pipeline's producer settings; returns the count."""
    producer = Producer(producer_config(**{"linger.ms": 50, "queue.buffering.max.messages": 1_000_000}))
    n = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    if producer.flush(timeout_s) != 0:
        raise RuntimeError(f"could not deliver all records to {topic}")
    return n


def leg_records(legs: Iterable[FinishedLeg]) -> Iterator[tuple[bytes, bytes]]:
    """Legs as ``callback.legs`` records, keyed by payer as the catalogue says."""
    for leg in legs:
        yield leg.payer.key.encode(), leg.model_dump_json().encode()


def expected_prices(
    run: str, legs: Iterable[FinishedLeg], n_users: int = 20, n_cards: int = 10
) -> dict[str, tuple[str, Decimal]]:
    """leg_id -> (payer key, price) from the pure engine and this run's reference data: what the
    rated CDRs must say, for checking a run end to end."""
    from rating_stream.engine import CompiledTariff, quote

    compiled = {t.tariff_id: CompiledTariff.build(t) for t in tariffs(run)}
    tariff_of = {f"user:{u.user_id}": u.tariff_id for u in users(run, n_users)}
    tariff_of[f"callback_user:{run}-owner"] = f"{run}-origins"
    tariff_of |= {f"card:{c.number}": c.tariff_id for c in cards(run, n_cards)}
    out = {}
    for leg in legs:
        q = quote(compiled[tariff_of[leg.payer.key]], leg.dst, leg.billsec_ms, leg.answered_at is not None)
        out[leg.leg_id] = (leg.payer.key, q.price)
    return out


def expected_charges(expected: dict[str, tuple[str, Decimal]]) -> tuple[dict[str, Decimal], dict[str, int]]:
    """From ``expected_prices``: per payer key, the sum of its non-zero charges and how many there
    are (a free leg debits nothing and bumps no balance sequence)."""
    charges: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for key, price in expected.values():
        if price > 0:
            charges[key] = charges.get(key, Decimal(0)) + price
            counts[key] = counts.get(key, 0) + 1
    return charges, counts


def opening_balances(run: str, n_users: int = 20, n_cards: int = 10) -> dict[str, Decimal]:
    """Configured opening balance of every payer of the run, by ``accounts.balances`` key."""
    out = {f"user:{u.user_id}": u.balance for u in users(run, n_users)}
    out[f"callback_user:{run}-owner"] = users(run, n_users)[0].balance
    out |= {f"card:{c.number}": c.balance for c in cards(run, n_cards)}
    return out
