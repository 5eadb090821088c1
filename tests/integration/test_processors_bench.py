"""``callback bench processors --quick --json`` runs every phase on the stack (ramp through the real
processes, retry lateness, SIGKILL recovery, the bare Faust agent) and reports every figure with its
counts checked. The figures themselves are recorded in docs/processors.md, not asserted: a benchmark
is never a timed pass/fail test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

KEYS = (
    "callbacks_per_s",
    "initiation_to_originate_p50_ms",
    "initiation_to_originate_p99_ms",
    "ivr_to_command_p50_ms",
    "ivr_to_command_p99_ms",
    "retry_lateness_p50_ms_1k",
    "retry_lateness_p99_ms_1k",
    "retry_lateness_p50_ms_10k",
    "retry_lateness_p99_ms_10k",
    "recovery_s",
    "bare_agent_events_per_s",
    "events_per_callback",
    "machine",
    "load_before",
    "load_after",
    "method",
)


def test_quick_bench_reports_every_figure_and_checks_its_own_counts(stack):
    out = subprocess.run(
        [sys.executable, "-m", "callback.cli", "bench", "processors", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    result = json.loads(out.stdout)
    assert [k for k in KEYS if k not in result] == []
    assert result["checks_ok"] and len(result["checks"]) >= 5, result["checks"]

    # the ramp: every offered callback completed, latencies measured on real records
    steps = result["steps"]
    assert steps and all(s["offered"] > 0 and s["completed"] == s["offered"] for s in steps), steps
    assert result["callbacks_per_s"] in (0, *[s["rate"] for s in steps])
    assert 0 < result["initiation_to_originate_p50_ms"] <= result["initiation_to_originate_p99_ms"]
    assert 0 < result["ivr_to_command_p50_ms"] <= result["ivr_to_command_p99_ms"]
    # initiation, originate result, IVR input, dial result, hangups: at least these reach the agent
    assert result["events_per_callback"] >= 6
    assert result["inputs_per_callback"]["callback.initiation"] == 1

    # retries: each pending retry fired once, lateness measured for both rounds
    rounds = result["retries"]
    assert [r["pending"] for r in rounds] == result["retry_pending_sizes"] and len(rounds) == 2
    for r in rounds:
        # fired once: one attempt-2 Originate command per session (copies of it are counted apart)
        assert r["retries_fired"] == r["attempt2_originate_commands"] == r["pending"], r
        assert r["all_pending_before_due"] and r["outcomes"] == {"failed_a": r["pending"]}, r
    for size in ("1k", "10k"):
        assert 0 < result[f"retry_lateness_p50_ms_{size}"] <= result[f"retry_lateness_p99_ms_{size}"]

    # recovery: the restarted worker published again, every callback across the kill ended once
    assert result["recovery_s"] > 0 and result["recovery_ready_s"] > 0
    for rec in result["recoveries"]:
        assert rec["outcomes"] == {"completed": rec["callbacks"]} and rec["callbacks"] > 0, rec
        assert set(rec["originates_per_callback"]) == {"1"}, rec

    # the pure layer replayed the recorded inputs of real callbacks to the same outcome
    pure = result["pure_layer"]
    assert pure["callbacks"] > 0 and pure["outcomes"] == {"completed": pure["callbacks"]}, pure
    assert pure["us_per_input"] > 0 and pure["worker_cpu_us_per_input"] > 0

    # the reference and what the goals are computed from
    assert result["bare_agent_events_per_s"] > 0 and result["bare_agent"]["events"] > 0
    assert result["target_callbacks_per_s"] > 0
    assert set(result["goals"]) == {
        "callbacks_per_s", "initiation_to_originate_p99_ms", "retry_lateness_p99_ms_10k", "recovery_s",
    }
    assert "CPUs" in result["machine"] and len(result["load_before"]) == len(result["load_after"]) == 3
    assert "SIGKILL" in result["method"]
