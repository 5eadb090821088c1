"""Prometheus counters of the AMI side, one registry per process (``--metrics-port`` serves them).

Names say what a 3 a.m. operator needs: is the producer reading, publishing, dropping duplicates,
buffering (Kafka down) or overflowing (Kafka down too long); is the originator executing, skipping
duplicates, failing.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

AMI_EVENTS_READ = Counter("callback_ami_events_read_total", "AMI events read", ["pbx"])
AMI_EVENTS_IGNORED = Counter(
    "callback_ami_events_ignored_total", "AMI events read that map to no domain event", ["pbx", "event"]
)
AMI_RECORDS_PUBLISHED = Counter(
    "callback_ami_records_published_total", "Records delivered to Kafka", ["pbx", "topic"]
)
AMI_DUPLICATES_DROPPED = Counter(
    "callback_ami_duplicates_dropped_total",
    "Records not published again (same PBX, Uniqueid and event)",
    ["pbx"],
)
AMI_REJECTED = Counter(
    "callback_ami_events_rejected_total", "AMI events dead-lettered", ["pbx", "error_kind"]
)
AMI_BUFFERED = Gauge("callback_ami_buffered_records", "Records waiting for Kafka", ["pbx"])
AMI_BUFFER_OVERFLOW = Counter(
    "callback_ami_buffer_overflow_total",
    "Records dropped because the buffer was full (Kafka unavailable too long)",
    ["pbx"],
)
AMI_RECONNECTS = Counter("callback_ami_reconnects_total", "AMI (re)connections", ["pbx"])
AMI_CONNECTED = Gauge("callback_ami_connected", "1 while logged in to the PBX", ["pbx"])

COMMANDS_READ = Counter("callback_commands_read_total", "pbx.commands records read")
COMMANDS_EXECUTED = Counter(
    "callback_commands_executed_total", "AMI actions accepted by the PBX", ["server", "type"]
)
COMMANDS_SKIPPED_DUPLICATE = Counter(
    "callback_commands_skipped_duplicate_total",
    "Commands whose id was already executed (redelivery)",
    ["type"],
)
COMMANDS_FAILED = Counter(
    "callback_commands_failed_total", "Commands reported as command.failed", ["server", "type", "reason"]
)
COMMANDS_DEAD_LETTERED = Counter(
    "callback_commands_dead_lettered_total", "Malformed commands", ["error_kind"]
)

WEB_REQUESTS = Counter("callback_web_requests_total", "Web callback requests", ["status"])
