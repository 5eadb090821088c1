"""Fixtures the integration modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.rig import CallbackProcess


@pytest.fixture(scope="module")
def rater_and_sink(stack, tmp_path_factory) -> Iterator[None]:
    """The real rater and CDR sink on the catalogue's topics, for a module's tests; both must stop
    cleanly at its end."""
    logs = tmp_path_factory.mktemp("rater-and-sink")
    rater = CallbackProcess(["rating", "--batch-max", "500"], logs / "rater.log").start()
    sink = CallbackProcess(["cdr-sink", "--flush-interval-s", "0.3"], logs / "sink.log").start()
    yield
    assert (rater.stop(), sink.stop()) == (0, 0), f"rater:\n{rater.tail()}\nsink:\n{sink.tail()}"
