"""Rating one batch of ``callback.legs`` records (and ``cdr.rerates`` corrections): the pure heart
of the rater.

Given raw record bytes, reference data and the ledger, decide for each record: rate and charge
it, drop it as an already-charged duplicate, or reject it with a dead-letter reason. Nothing is
sent anywhere here; the rater (``rater.py``) produces the outputs in one Kafka transaction and
calls ``commit`` only after the transaction committed, so an aborted transaction leaves the
ledger and the duplicate filter exactly as they were.

Nothing one record holds can stop the batch: a leg that cannot be priced (a rate no validation
checked, a price or balance beyond what ``Decimal(18, 8)`` holds, any arithmetic error) is
rejected with ``unpriceable`` / ``balance_out_of_range`` and its reason, like a leg without a
tariff, and the others are rated. Only the reference catch-up (Kafka) may raise, and then the rater
retries the whole batch: a leg must not be dead-lettered because the broker did not answer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from pydantic import ValidationError

from callback.reference import ReferenceData
from rating_stream.cdr import cdr_json
from rating_stream.engine import Quote, RatingError, quote
from rating_stream.payer import Ledger, LedgerBatch, PayerTerms, payer_terms
from rating_stream.wire import LegWire, PayerWire, decode_leg
from schemas.callback import Payer
from schemas.envelope import invalid_record
from schemas.rating import RerateRequest

log = logging.getLogger(__name__)

#: rating errors that a newer reference record may cure (a payer, tariff or prefix just added)
_STALE_REFERENCE = frozenset({"unknown_payer", "no_tariff", "no_prefix", "currency_mismatch"})


#: Seconds by which the processors' clock (a leg's envelope ``time``) may run behind the rater's.
LEG_CLOCK_SKEW_S = 300.0


class RecentLegs:
    """Leg ids charged recently, to drop legs Kafka redelivers (docs/rating.md, "Exactly once").

    Bounded by age: remembering ``window_s`` seconds of leg ids (hours by default) keeps memory
    flat. The price of that bound is a horizon: the memory is complete only for charges made since
    ``horizon(now)``, so a leg that could have been charged before it cannot be told apart from a
    new one. ``RatingBatch`` sends such a leg to review instead of charging it (see ``_rate``).
    """

    def __init__(self, window_s: float, clock_skew_s: float = 0.0) -> None:
        self.window_s = window_s
        #: how far the clock that stamped a leg's ``time`` may be off the rater's
        self.clock_skew_s = clock_skew_s
        self._seen: OrderedDict[str, float] = OrderedDict()

    def horizon(self, now: float) -> float:
        """The oldest leg ``time`` (epoch seconds) whose every possible charge is still in memory.

        Every charge of the last ``window_s`` is known (the rater restores that much at start and
        expires only older ones); a leg stamped ``t`` was first published no earlier than
        ``t - clock_skew_s``, so a leg stamped before the window plus the skew might have been
        charged before the memory reaches. After a rater outage longer than the window, start it
        with a window that covers the outage, or such legs go to review."""
        return now - self.window_s + self.clock_skew_s

    def __contains__(self, leg_id: str) -> bool:
        return leg_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, leg_id: str, at: float) -> None:
        self._seen[leg_id] = at
        self._seen.move_to_end(leg_id)

    def expire(self, now: float) -> None:
        horizon = now - self.window_s
        seen = self._seen
        while seen:
            leg_id, at = next(iter(seen.items()))
            if at >= horizon:
                break
            seen.popitem(last=False)


@dataclass(slots=True)
class Rejected:
    error_kind: str
    reason: str
    leg_id: str | None = None


@dataclass
class BatchResult:
    """What one batch produces: CDRs (key, value), balance updates (key, value), rejects, counts."""

    cdrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    balances: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: one ``accounts.ledger`` entry per charged leg, in the order charged
    ledger: list[tuple[bytes, bytes]] = field(default_factory=list)
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)  # (index in batch, why)
    duplicates: int = 0
    rated_by_leg: dict[str, int] = field(default_factory=dict)
    charged: Decimal = Decimal(0)


class RatingBatch:
    """One transaction's worth of rating; ``commit`` merges it into the ledger and the filter."""

    def __init__(
        self,
        ref: ReferenceData,
        ledger: Ledger,
        recent: RecentLegs,
        *,
        source: str,
        rated_at: datetime,
        version: int = 1,
        refresh: Callable[[], object] | None = None,
        rerated: dict[str, int] | None = None,
    ) -> None:
        self._ref = ref
        self._ledger_batch: LedgerBatch = ledger.batch()
        self._recent = recent
        self._horizon = recent.horizon(rated_at.timestamp())
        self._new_legs: dict[str, None] = {}
        self._source = source
        self._rated_at = rated_at
        self._version = version
        #: payer key -> terms; reference data does not change within a batch (except by refresh)
        self._terms: dict[str, PayerTerms] = {}
        #: brings reference data up to date; called at most once per batch, on the first miss
        self._refresh = refresh
        #: leg id -> highest CDR version re-rates applied (committed), and this batch's
        self._rerated = rerated if rerated is not None else {}
        self._new_rerates: dict[str, int] = {}
        self.result = BatchResult()

    def add(self, index: int, value: bytes | None) -> None:
        """Rate the record at ``index`` of the batch (its raw value) into ``result``."""
        outcome = self._rate(value)
        if isinstance(outcome, Rejected):
            self.result.rejected.append((index, outcome))

    def _rate(self, value: bytes | None) -> Rejected | None:
        if not value:
            return Rejected("malformed_json", "empty record value")
        try:
            leg = decode_leg(value)
        except ValidationError as exc:
            return _validation_reject(exc)
        leg_id = leg.leg_id
        result = self.result
        if leg_id in self._recent or leg_id in self._new_legs:
            result.duplicates += 1  # the rater logs one line per batch; each one only at DEBUG
            log.debug("dropping redelivered leg %s: already charged", leg_id)
            return None
        # A leg first published before the memory horizon may have been charged before it and
        # forgotten since: a processors worker that comes back after a long outage re-publishes its
        # last legs byte for byte (envelope time included). Review it, never charge it twice.
        if leg.time.timestamp() < self._horizon:
            return Rejected(
                "beyond_dedupe_horizon",
                f"leg first published at {leg.time.isoformat()}, before the rater's memory of "
                "charged legs begins; it may have been charged already, so it goes to review "
                "instead of being charged",
                leg_id,
            )
        payer = leg.payer
        payer_key = payer.key
        try:
            terms, q = self._price(leg, payer, payer_key)
        except RatingError as exc:
            if self._refresh is None or exc.kind not in _STALE_REFERENCE:
                return Rejected(exc.kind, exc.reason, leg_id)
            log.info("leg %s: %s; catching up on reference data before giving up", leg_id, exc.reason)
            self._refresh()
            self._refresh = None
            self._terms.clear()
            try:
                terms, q = self._price(leg, payer, payer_key)
            except RatingError as again:
                return Rejected(again.kind, again.reason, leg_id)
        price = q.price
        try:
            cdr = cdr_json(leg, q, version=self._version, rated_at=self._rated_at, source=self._source)
            if price > 0:  # raises, changing nothing, if the balance would leave Decimal(18, 8)
                self._ledger_batch.debit(terms.opening, price, leg_id, self._version)
        except RatingError as exc:
            return Rejected(exc.kind, exc.reason, leg_id)
        except (ArithmeticError, ValueError) as exc:
            log.exception("leg %s: cannot charge %s to %s", leg_id, price, payer_key)
            return Rejected("unpriceable", f"cannot charge {price} to {payer_key}: {exc!r}", leg_id)
        if price > 0:
            result.charged += price
        self._new_legs[leg_id] = None
        result.cdrs.append((leg_id.encode(), cdr))
        by_leg = result.rated_by_leg
        by_leg[leg.leg] = by_leg.get(leg.leg, 0) + 1
        return None

    def add_rerate(self, index: int, value: bytes | None) -> None:
        """Apply the ``cdr.rerates`` request at ``index``: its CDR goes out as it is, its payer's
        balance moves by the new price minus the previous one; a version already applied to the
        leg is dropped (``callback rerate`` run twice before the first run's CDRs were stored)."""
        outcome = self._rerate(value)
        if isinstance(outcome, Rejected):
            self.result.rejected.append((index, outcome))

    def _rerate(self, value: bytes | None) -> Rejected | None:
        if not value:
            return Rejected("malformed_json", "empty record value")
        try:
            request = RerateRequest.model_validate_json(value)
        except ValidationError as exc:
            return _validation_reject(exc)
        cdr = request.cdr
        leg_id, version = cdr.leg_id, cdr.version
        if version <= max(self._rerated.get(leg_id, 0), self._new_rerates.get(leg_id, 0)):
            self.result.duplicates += 1
            log.debug("dropping re-rate of leg %s to version %d: already applied", leg_id, version)
            return None
        payer = cdr.payer
        try:
            terms = self._terms_of(payer, payer.key)
            if terms.opening.currency != cdr.currency:
                raise RatingError(
                    "currency_mismatch",
                    f"{payer.key} pays in {terms.opening.currency}, the CDR is in {cdr.currency}",
                )
            delta = cdr.price - request.previous_price
            if delta:
                self._ledger_batch.adjust(terms.opening, delta, leg_id, version)
        except RatingError as exc:
            return Rejected(exc.kind, exc.reason, leg_id)
        self._new_rerates[leg_id] = version
        self.result.cdrs.append((leg_id.encode(), cdr.model_dump_json().encode()))
        return None

    def _terms_of(self, payer: PayerWire | Payer, payer_key: str) -> PayerTerms:
        terms = self._terms.get(payer_key)
        if terms is None:
            terms = self._terms[payer_key] = payer_terms(payer, self._ref)
        return terms

    def _price(self, leg: LegWire, payer: PayerWire, payer_key: str) -> tuple[PayerTerms, Quote]:
        terms = self._terms_of(payer, payer_key)
        try:
            return terms, quote(terms.tariff, leg.dst, leg.billsec_ms, leg.answered_at is not None)
        except (ArithmeticError, ValueError) as exc:  # quote's own checks raise RatingError; not this
            leg_id = leg.leg_id
            log.exception("leg %s: pricing on tariff %r failed", leg_id, terms.tariff.tariff_id)
            raise RatingError(
                "unpriceable", f"tariff {terms.tariff.tariff_id!r} cannot price leg {leg_id}: {exc!r}"
            ) from None

    def finish(self) -> BatchResult:
        """Add the ledger entry of every charge, and the latest balance of every payer charged in
        this batch (one update per payer: the topic is compacted, so intermediate balances would
        be overwritten anyway)."""
        ledger, source, at = self.result.ledger, self._source, self._rated_at
        for entry in self._ledger_batch.entries:
            ledger.append((entry.account.key.encode(), entry.ledger_json(source=source, at=at)))
        for change in self._ledger_batch.changes():
            update = change.balance_update(source=self._source, at=self._rated_at)
            self.result.balances.append((change.account.key.encode(), update.model_dump_json().encode()))
        return self.result

    def commit(self, now: float) -> None:
        """The transaction committed: make the debits and the charged leg ids permanent."""
        self._ledger_batch.commit()
        self._rerated.update(self._new_rerates)
        for leg_id in self._new_legs:
            self._recent.add(leg_id, now)
        self._recent.expire(now)


def _validation_reject(exc: ValidationError) -> Rejected:
    kind, reason = invalid_record(exc)
    return Rejected(kind, reason)
