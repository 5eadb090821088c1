"""Prometheus counters of the rating stream (scraped when a process runs with ``--metrics-port``).

``callback_rating_dead_letters_total`` is the alert counter: any increase means legs that were
not charged and need a human (missing tariff, unknown payer, malformed input).
"""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

LEGS_RATED = Counter("callback_rating_legs_rated_total", "Legs priced and charged (one per leg id)", ["leg"])
LEGS_DUPLICATE = Counter(
    "callback_rating_legs_duplicate_total",
    "Redelivered legs dropped because their leg id was already charged",
)
DEAD_LETTERS = Counter(
    "callback_rating_dead_letters_total", "Records sent to a dead-letter topic", ["component", "error_kind"]
)
TRANSACTIONS = Counter(
    "callback_rating_transactions_total", "Rater Kafka transactions by outcome", ["outcome"]
)
SINK_ROWS = Counter("callback_cdr_sink_rows_inserted_total", "CDR rows inserted into ClickHouse")
SINK_RETRIES = Counter(
    "callback_cdr_sink_retries_total", "ClickHouse insert attempts that failed and were retried"
)
SINK_CONSUMER_REPLACED = Counter(
    "callback_cdr_sink_consumer_replaced_total",
    "Kafka consumers of the CDR sink replaced after failing for good (e.g. a fenced static member)",
)
SINK_COMMIT_FAILURES = Counter(
    "callback_cdr_sink_commit_failures_total",
    "Offset commits that failed after a broker pause or rebalance (the batch is read again)",
)


def serve(port: int | None) -> None:
    """Expose /metrics on 127.0.0.1:``port`` (no-op when port is None)."""
    if port:
        start_http_server(port, addr="127.0.0.1")
