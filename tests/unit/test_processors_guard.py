"""``processors.guard``: the fraud guards' counters (per number, per access number, one live session),
their one-minute window, idempotent verdicts, releases, and the limits taken from the settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from processors.guard import (
    DEFAULT_BLOCKED_PREFIXES,
    LIVE_TTL,
    GuardEntry,
    GuardLimits,
    admit,
    forgettable,
    release,
)
from schemas.control import AdmissionRequest
from schemas.reference import CallbackSettings
from tests.factories import system_settings
from tests.unit.processors_helpers import T0, at

NUMBER = "2348031234567"
OTHER = "2348039999999"
DID = "2349000000001"


def request(
    callback_id: str,
    seconds: float = 0,
    *,
    number: str = NUMBER,
    did: str | None = DID,
    per_number: int = 3,
    per_did: int = 600,
    one_live: bool = False,
) -> AdmissionRequest:
    return AdmissionRequest(
        source="test",
        callback_id=callback_id,
        number=number,
        did=did,
        received_at=at(seconds),
        per_number_per_minute=per_number,
        per_did_per_minute=per_did,
        one_live_session=one_live,
    )


class Guard:
    """The guard stage's table, in a dict: one entry per number and per access number."""

    def __init__(self) -> None:
        self.entries: dict[str, GuardEntry] = {}

    def ask(self, req: AdmissionRequest) -> tuple[bool, str]:
        did_key = f"did:{req.did}" if req.did else None
        result = admit(
            req,
            self.entries.get(f"ani:{req.number}", GuardEntry()),
            self.entries.get(did_key, GuardEntry()) if did_key else None,
        )
        self.entries[f"ani:{req.number}"] = result.number_entry
        if did_key is not None and result.did_entry is not None:
            self.entries[did_key] = result.did_entry
        return result.admitted, result.reason

    def release(self, number: str, callback_id: str) -> None:
        self.entries[f"ani:{number}"] = release(self.entries[f"ani:{number}"], callback_id)


def test_per_number_limit_refuses_the_request_over_the_limit():
    guard = Guard()
    verdicts = [guard.ask(request(f"c{i}", i, per_number=3)) for i in range(4)]
    assert verdicts == [(True, ""), (True, ""), (True, ""), (False, "fraud_ani_rate")]


def test_per_number_limit_counts_each_number_apart():
    guard = Guard()
    for i in range(3):
        guard.ask(request(f"c{i}", i, per_number=3))
    assert guard.ask(request("x", 4, number=OTHER, per_number=3)) == (True, "")


def test_refused_requests_count_too():
    guard = Guard()
    for i in range(3):
        guard.ask(request(f"c{i}", i, per_number=3))
    assert guard.ask(request("c3", 10, per_number=3))[0] is False
    # c0 leaves the window at 60 s, but c3 (refused, at 10 s) still counts: 3 in the last minute
    assert guard.ask(request("c4", 60.5, per_number=3)) == (False, "fraud_ani_rate")


def test_requests_older_than_a_minute_stop_counting():
    def three_at_zero() -> Guard:
        guard = Guard()
        for i in range(3):
            guard.ask(request(f"c{i}", 0, per_number=3))
        return guard

    assert three_at_zero().ask(request("late", 59.999, per_number=3)) == (False, "fraud_ani_rate")
    assert three_at_zero().ask(request("late", 60, per_number=3)) == (True, "")


def test_per_did_limit():
    guard = Guard()
    numbers = [f"23480300000{i:02d}" for i in range(4)]
    verdicts = [guard.ask(request(f"c{i}", i, number=n, per_did=3)) for i, n in enumerate(numbers)]
    assert verdicts[:3] == [(True, "")] * 3
    assert verdicts[3] == (False, "fraud_did_rate")
    # another access number is counted apart
    assert guard.ask(request("d", 5, number="2348030000099", did="2349000000002", per_did=3)) == (True, "")


def test_per_did_window_is_one_minute():
    guard = Guard()
    for i in range(3):
        guard.ask(request(f"c{i}", 0, number=f"23480300000{i:02d}", per_did=3))
    assert guard.ask(request("late", 61, number="2348030000050", per_did=3)) == (True, "")


def test_request_without_did_is_not_counted_per_did():
    guard = Guard()
    assert guard.ask(request("w1", 0, did=None, per_did=1)) == (True, "")
    assert guard.ask(request("w2", 0, number=OTHER, did=None, per_did=1)) == (True, "")
    assert not any(key.startswith("did:") for key in guard.entries)


def test_one_live_session_per_number():
    guard = Guard()
    assert guard.ask(request("c1", 0, one_live=True)) == (True, "")
    assert guard.ask(request("c2", 1, one_live=True)) == (False, "fraud_live_session")
    assert guard.ask(request("o1", 1, number=OTHER, one_live=True)) == (True, "")


def test_release_frees_the_number():
    guard = Guard()
    guard.ask(request("c1", 0, one_live=True))
    guard.release(NUMBER, "c1")
    assert guard.entries[f"ani:{NUMBER}"].live == ()
    assert guard.ask(request("c2", 1, one_live=True)) == (True, "")


def test_release_is_idempotent_and_only_frees_its_own_session():
    entry = GuardEntry()
    entry = admit(request("c1", 0), entry, None).number_entry
    entry = admit(request("c2", 1), entry, None).number_entry
    once = release(entry, "c1")
    assert [lv.callback_id for lv in once.live] == ["c2"]
    assert release(once, "c1") == once
    assert release(GuardEntry(), "c1") == GuardEntry()


def test_repeated_request_returns_the_first_verdict_without_counting_again():
    guard = Guard()
    assert guard.ask(request("c1", 0, per_number=2, per_did=2)) == (True, "")
    before = dict(guard.entries)
    for _ in range(5):
        assert guard.ask(request("c1", 0, per_number=2, per_did=2)) == (True, "")
    assert guard.entries == before
    assert guard.ask(request("c2", 1, per_number=2, per_did=2)) == (True, "")  # still room for one more


def test_repeated_request_of_a_refused_one_stays_refused():
    guard = Guard()
    guard.ask(request("c1", 0, one_live=True))
    assert guard.ask(request("c2", 1, one_live=True)) == (False, "fraud_live_session")
    guard.release(NUMBER, "c1")
    assert guard.ask(request("c2", 1, one_live=True)) == (False, "fraud_live_session")


def test_repeated_request_after_the_window_of_an_admitted_live_session_is_still_admitted():
    guard = Guard()
    guard.ask(request("c1", 0, one_live=True))
    assert guard.ask(request("c1", 90, one_live=True)) == (True, "")
    assert len(guard.entries[f"ani:{NUMBER}"].live) == 1  # not counted twice


def test_zero_switches_a_limit_off():
    guard = Guard()
    verdicts = [guard.ask(request(f"c{i}", 0, per_number=0, per_did=0)) for i in range(50)]
    assert all(admitted for admitted, _ in verdicts)


def test_a_live_session_stops_counting_after_the_live_ttl():
    guard = Guard()
    guard.ask(request("c1", 0, one_live=True))
    almost = LIVE_TTL.total_seconds() - 1
    assert guard.ask(request("c2", almost, one_live=True)) == (False, "fraud_live_session")
    assert guard.ask(request("c3", LIVE_TTL.total_seconds() + 1, one_live=True)) == (True, "")


def test_entries_are_pruned_to_the_last_minute():
    entry = admit(request("c1", 0), GuardEntry(), GuardEntry())
    did_entry = entry.did_entry
    assert did_entry is not None and did_entry.requests_last_minute == 1
    pruned = did_entry.pruned(T0 + timedelta(minutes=2))
    assert pruned.per_second == () and pruned.empty
    number_entry = release(entry.number_entry, "c1").pruned(T0 + timedelta(minutes=2))
    assert number_entry.empty


# --- the limits -----------------------------------------------------------------------------------


def test_limits_default_when_no_scope_sets_them():
    limits = GuardLimits.from_settings(system_settings())
    assert limits == GuardLimits(3, 600, True, DEFAULT_BLOCKED_PREFIXES)
    assert {"870", "871", "872", "873", "874", "881", "882"} == set(DEFAULT_BLOCKED_PREFIXES)
    assert limits.counting


def test_limits_take_the_settings_overrides():
    settings = system_settings(
        max_initiations_per_ani_per_minute=5,
        max_initiations_per_did_per_minute=0,
        one_live_session_per_ani=False,
        blocked_origin_prefixes=["88"],
    )
    limits = GuardLimits.from_settings(settings)
    assert limits == GuardLimits(5, 0, False, ("88",))


def test_limits_follow_the_overlay():
    base = system_settings(max_initiations_per_ani_per_minute=5)
    limits = GuardLimits.from_settings(
        base.overlay(CallbackSettings(scope="dialplan:x", max_initiations_per_ani_per_minute=0))
    )
    assert limits.per_number_per_minute == 0  # 0 is a value (no limit), not "unset"


def test_all_counting_guards_off_is_not_counting():
    assert not GuardLimits(0, 0, False).counting
    assert GuardLimits(0, 0, True).counting
    assert GuardLimits(0, 1, False).counting


def test_an_empty_blocklist_blocks_nothing():
    assert (
        GuardLimits.from_settings(system_settings(blocked_origin_prefixes=[])).blocked_prefix("870123")
        is None
    )


@pytest.mark.parametrize(
    "prefixes,number,expected",
    [
        (("87", "870", "8707"), "870712345", "8707"),
        (("8707", "87", "870"), "870612345", "870"),
        (("870",), "87", None),
        (("870",), "1870123", None),
        (DEFAULT_BLOCKED_PREFIXES, "881612345", "881"),
        (DEFAULT_BLOCKED_PREFIXES, "2348031234567", None),
    ],
)
def test_blocked_prefix_is_the_longest_match(prefixes, number, expected):
    assert GuardLimits(blocked_prefixes=prefixes).blocked_prefix(number) == expected


def test_forgettable_keys_are_those_with_nothing_left_to_count():
    guard = Guard()
    guard.ask(request("cb-live", 0, one_live=True))  # admitted: live until released
    guard.ask(request("cb-quiet", 0, number=OTHER, did=None))
    guard.release(OTHER, "cb-quiet")
    # within the minute every key still counts something
    assert forgettable(guard.entries.items(), at(30)) == []
    # a minute later: the released number and the DID have nothing left; the live one stays
    assert sorted(forgettable(guard.entries.items(), at(61))) == [f"ani:{OTHER}", f"did:{DID}"]
    # once the live session's TTL is over it goes too
    later = at(0) + LIVE_TTL + timedelta(seconds=1)
    everything = [f"ani:{NUMBER}", f"ani:{OTHER}", f"did:{DID}"]
    assert sorted(forgettable(guard.entries.items(), later)) == everything
