"""``callback bench rating`` runs end to end on the stack and prints both rates, their ratio and
the latency with its two halves (a small run: the figures themselves are recorded in
docs/rating.md, not asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_prints_rated_and_passthrough_rates_and_ratio(stack):
    out = subprocess.run(
        [sys.executable, "-m", "callback.cli", "bench", "rating", "--legs", "3000", "--rounds", "1",
         "--latency", "--rate", "200", "--seconds", "3"],
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
    rater_cpu = re.search(r"CPU per leg \(process time, all threads\): rater ([\d.]+) us", text)
    alone = re.search(r"rating alone \(.*3000 legs in one process, no Kafka\): ([\d.]+) us per leg, so "
                      r"Kafka's share of the rater's CPU is (-?[\d.]+) us", text)
    assert rater_cpu and alone, text
    assert float(alone.group(1)) > 0
    assert abs(float(rater_cpu.group(1)) - float(alone.group(1)) - float(alone.group(2))) < 0.15
    latency = re.search(
        r"latency leg -> ClickHouse at 200 legs/s over 3 s \(600 legs .* every one stored\): "
        r"p50 ([\d.]+) ms, "
        r"p99 ([\d.]+) ms.*produced -> rater committed p50/p99 ([\d.]+)/([\d.]+) ms, "
        r"committed -> stored ([\d.]+)/([\d.]+) ms", text)
    assert latency, text
    p50, p99, commit50, _commit99, stored50, _stored99 = (float(x) for x in latency.groups())
    # each leg is committed by the rater before the sink can read it: the halves add up to the whole
    assert 0 < commit50 < p50 and 0 < stored50 < p50 and p50 <= p99
