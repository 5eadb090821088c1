"""Balances have one writer: a second rater started on the same group fences the first, instead of
both charging every leg (the transactional id is the group id)."""

from __future__ import annotations

import uuid

import pytest

from infra.process import wait_until
from infra.rig import CallbackProcess
from rating_stream.loadgen import (
    expected_charges,
    expected_prices,
    leg_records,
    make_legs,
    opening_balances,
    produce,
    publish_reference,
)
from rating_stream.rater import read_balances
from tests.rigs import committed_keys, rater_args, run_topics

pytestmark = pytest.mark.integration






def test_second_rater_on_the_group_fences_the_first_and_nothing_is_charged_twice(stack, tmp_path):
    run = f"fe{uuid.uuid4().hex[:8]}"
    topics = run_topics(run)
    publish_reference(run)
    args = rater_args(run, topics, 50)
    first = CallbackProcess([*args, "--instance", "first"], tmp_path / "first.log").start()
    legs = list(make_legs(run, 400))
    second: CallbackProcess | None = None
    try:
        produce(topics["legs"], leg_records(legs[:200]))
        assert wait_until(lambda: len(committed_keys(topics["cdr"])) >= 200, 60), first.tail()
        second = CallbackProcess([*args, "--instance", "second"], tmp_path / "second.log").start()
        assert wait_until(lambda: "ready" in second.log_text(), 60), second.tail()
        produce(topics["legs"], leg_records(legs[200:]))
        # the first finds out at its next transaction, and must stop rather than charge
        assert wait_until(lambda: not first.alive, 60), first.tail()
        assert first.returncode() != 0
        assert "fenced" in first.log_text()
        assert wait_until(lambda: len(committed_keys(topics["cdr"])) >= len(legs), 60), second.tail()
    finally:
        first.stop()
        second_code = second.stop() if second is not None else None

    keys = committed_keys(topics["cdr"])
    assert sorted(keys) == sorted(leg.leg_id for leg in legs), "every leg rated exactly once"
    assert second is not None and second_code == 0, second.tail() if second else ""

    expected = expected_prices(run, legs)
    charges, _count = expected_charges(expected)
    opening = opening_balances(run)
    balances = read_balances(topics["balances"])
    for key, charged in charges.items():
        assert balances[key].balance == opening[key] - charged, key
