"""A leg re-published after the rater's memory of charged legs has moved on goes to review, never
to a second charge; a leg published within the memory is charged or dropped as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callback.reference import ReferenceData
from rating_stream.batch import RatingBatch, RecentLegs
from rating_stream.loadgen import make_legs, reference_records
from rating_stream.payer import Ledger

RUN = "horizon"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WINDOW_S = 3600.0
SKEW_S = 300.0


def _ref() -> ReferenceData:
    data = ReferenceData()
    for topic, key, value in reference_records(RUN):
        data.apply(topic, key.decode(), value)
    return data


def _answered_leg(published: datetime):
    leg = next(leg for leg in make_legs(RUN, 50, seed=5) if leg.answered_at is not None)
    return leg.model_copy(update={"time": published})


def _batch(recent: RecentLegs) -> RatingBatch:
    return RatingBatch(_ref(), Ledger(), recent, source="r", rated_at=NOW)


def test_a_leg_published_before_the_memory_horizon_goes_to_review_not_to_a_charge():
    recent = RecentLegs(WINDOW_S, SKEW_S)
    old = _answered_leg(NOW - timedelta(seconds=WINDOW_S + 1))
    batch = _batch(recent)
    batch.add(0, old.model_dump_json().encode())
    result = batch.finish()
    assert result.cdrs == [] and result.charged == 0
    [(index, why)] = result.rejected
    assert index == 0
    assert why.error_kind == "beyond_dedupe_horizon" and why.leg_id == old.leg_id


def test_the_clock_skew_margin_is_part_of_the_horizon():
    recent = RecentLegs(WINDOW_S, SKEW_S)
    inside_window_but_within_skew = _answered_leg(NOW - timedelta(seconds=WINDOW_S - SKEW_S / 2))
    safely_inside = _answered_leg(NOW - timedelta(seconds=WINDOW_S - SKEW_S - 1))
    first, second = _batch(recent), _batch(recent)
    first.add(0, inside_window_but_within_skew.model_dump_json().encode())
    second.add(0, safely_inside.model_dump_json().encode())
    assert [r.error_kind for _i, r in first.finish().rejected] == ["beyond_dedupe_horizon"]
    second_result = second.finish()
    assert second_result.rejected == [] and len(second_result.cdrs) == 1 and second_result.charged > 0


def test_after_an_outage_longer_than_the_window_a_wider_window_charges_what_it_covers():
    """Legs published three hours ago, during a rater outage: a one-hour memory cannot vouch for
    them (review); restarted with a window that covers the outage, the rater charges them."""
    published_during_outage = _answered_leg(NOW - timedelta(hours=3))
    narrow, wide = _batch(RecentLegs(WINDOW_S, SKEW_S)), _batch(RecentLegs(4 * WINDOW_S, SKEW_S))
    narrow.add(0, published_during_outage.model_dump_json().encode())
    wide.add(0, published_during_outage.model_dump_json().encode())
    assert [r.error_kind for _i, r in narrow.finish().rejected] == ["beyond_dedupe_horizon"]
    result = wide.finish()
    assert result.rejected == [] and len(result.cdrs) == 1


def test_within_the_horizon_a_remembered_leg_is_still_a_duplicate():
    recent = RecentLegs(WINDOW_S, SKEW_S)
    leg = _answered_leg(NOW - timedelta(minutes=1))
    recent.add(leg.leg_id, NOW.timestamp() - 30)
    batch = _batch(recent)
    batch.add(0, leg.model_dump_json().encode())
    result = batch.finish()
    assert result.duplicates == 1 and result.cdrs == [] and result.rejected == []
