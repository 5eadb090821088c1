"""Who pays a leg, at which tariff, and the balances they are debited from. Pure: no I/O.

Seed, "Who pays": an unauthenticated leg A is paid by the Callback User (the system owner) at the
Callback Tariff, which is simply the tariff assigned to that user; once a user or calling card is
recognised it pays with its own tariff. The processors decide the payer and put it on the leg;
this module only resolves it against the reference data.

Balances are a ledger keyed like ``accounts.balances`` (``'<kind>:<id>'``). Every payer is
debited, prepaid or not: a postpaid user's balance simply goes below zero down to its credit
limit (and below it, with a warning, because a call that happened must still be charged). The
opening balance is the one configured on the user or card; once the rater has written a balance
to ``accounts.balances``, that ledger value wins over the configuration.

A balance, like every amount, stays within what ``Decimal(18, 8)`` holds (``MONEY_MAX``): a
charge that would take a balance (or a batch's summed change to it) beyond that is refused with
``RatingError('balance_out_of_range')``, and the rater dead-letters that leg instead of writing a
balance record no consumer could read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from callback.reference import ReferenceData
from rating_stream.engine import CompiledTariff, RatingError
from rating_stream.wire import LedgerWire, encode_ledger
from schemas.callback import Payer, PayerKind
from schemas.envelope import MONEY_MAX, SCHEMA_VERSION, bounded_event_id, money_text
from schemas.rating import BalanceUpdate


@dataclass(slots=True)
class Account:
    """One payer's balance as of the last charge applied to it. Never changed once made (each
    charge makes a new one); not ``frozen``, whose checked ``__init__`` cost four times a plain one,
    twice per leg on the rater's hot path."""

    key: str
    kind: PayerKind
    id: str
    currency: str
    balance: Decimal
    #: charges applied so far (BalanceUpdate.sequence)
    sequence: int = 0

    @classmethod
    def from_update(cls, update: BalanceUpdate) -> Account:
        return cls(
            f"{update.payer_kind.value}:{update.payer_id}",
            update.payer_kind,
            update.payer_id,
            update.currency,
            update.balance,
            update.sequence,
        )


@dataclass(frozen=True, slots=True)
class PayerTerms:
    """What the reference data says about a payer: its tariff and its opening account."""

    tariff: CompiledTariff
    opening: Account


def payer_terms(payer: Payer, ref: ReferenceData) -> PayerTerms:
    """Resolve a leg's payer to its tariff and opening balance, or raise ``RatingError``."""
    kind = payer.kind
    if kind is PayerKind.CARD:
        card = ref.cards.get(payer.id)
        if card is None:
            raise RatingError("unknown_payer", f"calling card {payer.id!r} is not in config.cards")
        tariff_id, currency, balance = card.tariff_id, card.currency, card.balance
    else:  # USER and CALLBACK_USER are both users; the Callback Tariff is the Callback User's tariff
        user = ref.users.get(payer.id)
        if user is None:
            raise RatingError("unknown_payer", f"{kind.value} {payer.id!r} is not in config.users")
        tariff_id, currency, balance = user.tariff_id, user.currency, user.balance
    tariff = ref.tariffs.get(tariff_id)
    if tariff is None:
        raise RatingError("no_tariff", f"tariff {tariff_id!r} of {payer.key} is not in config.tariffs")
    if tariff.currency != currency:
        raise RatingError(
            "currency_mismatch",
            f"tariff {tariff_id!r} is in {tariff.currency} but {payer.key} pays in {currency}",
        )
    return PayerTerms(tariff, Account(payer.key, kind, payer.id, currency, balance, 0))


@dataclass(slots=True)
class Change:
    """What one batch did to one account: the new state, the summed delta, the last leg charged."""

    account: Account
    delta: Decimal
    last_leg_id: str

    def balance_update(self, *, source: str, at: datetime) -> BalanceUpdate:
        """The ``accounts.balances`` record announcing this change."""
        account = self.account
        return BalanceUpdate(
            source=source,
            payer_kind=account.kind,
            payer_id=account.id,
            balance=account.balance,
            currency=account.currency,
            delta=self.delta,
            leg_id=self.last_leg_id,
            sequence=account.sequence,
            time=at,
        )


class Ledger:
    """Balances of every payer seen so far. Only a committed batch changes them.

    The rater debits inside a Kafka transaction; if the transaction aborts, the batch's debits
    must vanish too, so they are staged in a ``LedgerBatch`` and merged only after the commit.
    """

    def __init__(self, accounts: dict[str, Account] | None = None) -> None:
        self._accounts: dict[str, Account] = dict(accounts or {})

    def __len__(self) -> int:
        return len(self._accounts)

    def get(self, key: str) -> Account | None:
        return self._accounts.get(key)

    def items(self) -> Iterator[tuple[str, Account]]:
        return iter(self._accounts.items())

    def restore(self, account: Account) -> None:
        """Load a balance read back from ``accounts.balances`` (the latest one per payer wins)."""
        self._accounts[account.key] = account

    def batch(self) -> LedgerBatch:
        return LedgerBatch(self)

    def _merge(self, changes: dict[str, Change]) -> None:
        for key, change in changes.items():
            self._accounts[key] = change.account


@dataclass(slots=True)
class Entry:
    """One change applied in a batch, for ``accounts.ledger``: the account after it, the signed
    amount, the leg and the CDR version it goes with, and whether it was a charge. Never changed
    once made (not ``frozen`` for the reason ``Account`` gives)."""

    account: Account
    amount: Decimal
    leg_id: str
    cdr_version: int
    charge: bool

    def ledger_json(self, *, source: str, at: datetime) -> bytes:
        """The ``LedgerEntry`` record, built without pydantic: one per charged leg on the rater's
        hot path (a unit test holds it to the model)."""
        account = self.account
        return encode_ledger(
            LedgerWire(
                ledger_event_id(account.key, self.leg_id, self.cdr_version),
                SCHEMA_VERSION,
                at,
                source,
                "ledger.entry",
                account.kind,
                account.id,
                "charge" if self.charge else "adjustment",
                self.leg_id,
                self.cdr_version,
                money_text(self.amount),
                money_text(account.balance),
                account.currency,
                account.sequence,
            )
        )


def ledger_event_id(payer_key: str, leg_id: str, cdr_version: int) -> str:
    """Deterministic id of a ledger entry: one payer, one leg, one CDR version."""
    return bounded_event_id(f"ledger:{payer_key}:{leg_id}:{cdr_version}")


class LedgerBatch:
    """Debits staged for one transaction; ``commit`` makes them the ledger's truth. ``entries``
    lists every change in the order applied (``accounts.ledger``)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._changes: dict[str, Change] = {}
        self.entries: list[Entry] = []

    def debit(self, opening: Account, amount: Decimal, leg_id: str, cdr_version: int = 1) -> Account:
        """Charge ``amount`` (>= 0) to the account ``opening`` describes; returns the new state.
        Raises ``RatingError('balance_out_of_range')``, changing nothing, when the balance would
        leave what ``Decimal(18, 8)`` holds."""
        if amount < 0:
            raise ValueError("a charge is never negative")
        return self._apply(opening, amount, leg_id, charges=1, cdr_version=cdr_version)

    def adjust(self, opening: Account, delta: Decimal, leg_id: str, cdr_version: int) -> Account:
        """Apply a signed correction (a re-rate's new price minus its old one; negative = refund).
        It is not a new charge, so ``sequence`` (charges applied) stays as it is."""
        return self._apply(opening, delta, leg_id, charges=0, cdr_version=cdr_version)

    def _apply(
        self, opening: Account, amount: Decimal, leg_id: str, charges: int, cdr_version: int
    ) -> Account:
        key = opening.key
        change = self._changes.get(key)
        if change is not None:
            before, delta = change.account, change.delta - amount
        else:
            before, delta = self._ledger.get(key) or opening, -amount
        balance = before.balance - amount
        if not (-MONEY_MAX <= balance <= MONEY_MAX and -MONEY_MAX <= delta <= MONEY_MAX):
            raise RatingError(
                "balance_out_of_range",
                f"charging {amount} to {key} (balance {before.balance}) would take its balance to "
                f"{balance}, or this batch's change to it to {delta}, beyond what a balance holds "
                f"(Decimal(18, 8): at most {MONEY_MAX} either way)",
            )
        after = Account(key, before.kind, before.id, before.currency, balance, before.sequence + charges)
        if change is None:
            self._changes[key] = Change(after, delta, leg_id)
        else:
            change.account, change.delta, change.last_leg_id = after, delta, leg_id
        self.entries.append(Entry(after, -amount, leg_id, cdr_version, charges > 0))
        return after

    def changes(self) -> list[Change]:
        return list(self._changes.values())

    def __len__(self) -> int:
        return len(self._changes)

    def commit(self) -> None:
        self._ledger._merge(self._changes)
        self._changes = {}
        self.entries = []
