"""``callback bench rating`` runs end to end on the stack and prints both rates and their ratio
(a small run: the figures themselves are recorded in docs/rating.md, not asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_prints_rated_and_passthrough_rates_and_ratio(stack):
    out = subprocess.run(
        [sys.executable, "-m", "callback.cli", "bench", "rating", "--legs", "3000", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"machine: \d+ CPUs", text)
    passthrough = re.search(r"pass-through .*: ([\d,]+) legs/s", text)
    rated = re.search(r"rated and stored .*: +([\d,]+) legs/s .*3000 CDRs", text)
    ratio = re.search(r"ratio rated/pass-through: ([\d.]+)", text)
    assert passthrough and rated and ratio, text
    assert int(rated.group(1).replace(",", "")) > 0 and float(ratio.group(1)) > 0
