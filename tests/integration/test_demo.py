"""`callback demo --chaos` on the test stack: a small scenario while the processors worker, the rater
and the CDR sink are SIGKILLed (twice each), an AMI connection is cut and ClickHouse paused for 20 s.
The demo itself checks every callback's outcome, originate count and charge, three ways, and exits
non-zero on any difference; this test runs it as a user would and reads its report."""

from __future__ import annotations

import pytest

from infra.process import wait_until
from infra.rig import CallbackProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_chaos_demo_ends_every_callback_as_planned_and_charges_each_leg_once(stack, tmp_path):
    demo = CallbackProcess(
        ["demo", "--chaos", "--callbacks", "40", "--over", "30", "--seed", "11", "--run-dir", str(tmp_path)],
        tmp_path / "demo.log",
    ).start()
    wait_until(lambda: demo.proc.poll() is not None, 600, "the demo to finish", interval=1.0)
    [report] = list(tmp_path.glob("report-*.md"))
    text = report.read_text()
    assert demo.proc.returncode == 0, text + demo.log_text()[-3000:]
    assert "FAIL" not in text and text.count("- PASS ") == 4
    for action in ("processors SIGKILLed", "rating SIGKILLed", "cdr-sink SIGKILLed", "AMI connection",
                   "ClickHouse paused"):
        assert action in text, action
    assert "'processors': 2" in text and "'rating': 2" in text and "'cdr-sink': 2" in text
