"""Prometheus metrics of ``callback processors`` (``--metrics-port`` serves them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INPUTS = Counter("callback_processors_inputs_total", "Inputs applied to sessions", ["type"])
DUPLICATES = Counter(
    "callback_processors_duplicate_inputs_total", "Inputs seen before (redelivered); outputs re-sent"
)
DEAD_LETTERS = Counter(
    "callback_processors_dead_letters_total", "Inputs sent to a dead-letter topic", ["topic", "error_kind"]
)
TRANSITIONS = Counter("callback_processors_transitions_total", "Session transitions", ["to_state"])
COMMANDS = Counter("callback_processors_commands_total", "PBX commands published", ["type"])
LEGS = Counter("callback_processors_legs_total", "Finished legs published", ["leg"])
ADMISSIONS = Counter("callback_processors_admissions_total", "Fraud guard verdicts", ["verdict"])
TIMER_LATENESS = Histogram(
    "callback_processors_timer_lateness_seconds",
    "How late a timer was applied after its due time",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SKIPPED_REFILLED = Counter(
    "callback_processors_skipped_records_refilled_total",
    "Input records Faust dropped during a flow suspension, read again from Kafka and applied",
)
PENDING_TIMERS = Gauge("callback_processors_pending_timers", "Timers this worker waits for")
