"""The ClickHouse client every process and command uses, built from settings.clickhouse.

The one place a ``clickhouse_driver.Client`` is made (beside ``callback/kafka_io.py`` for Kafka):
the CDR sink, ``callback rerate``, the benchmarks, the demo's report, ``callback migrate`` and the
local stack's provisioning all connect through ``clickhouse_client``. Tables are always named with
their database (``callback.cdr``), so the client sets none: migrations create the database.

On a replicated cluster (settings.clickhouse.alt_hosts) the client knows every replica: it connects
to ``host:port`` or, when that does not answer, to the next of ``alt_hosts``, and a client whose
server died reconnects the same way on its next query. The CDR sink's retry of a failed insert
therefore lands on a surviving replica, where block deduplication drops it if the dead one had
stored it already (docs/analytics.md, "Replicated ClickHouse").
"""

from __future__ import annotations

from typing import Any

from clickhouse_driver import Client

from callback.settings import ClickHouseSettings, get_settings

#: seconds to open the connection: an unreachable server is reported at once, not after minutes
CONNECT_TIMEOUT_S = 5
#: seconds a query or an insert of one batch may take before the client gives up on the server
SEND_RECEIVE_TIMEOUT_S = 60
#: rows per block the server forms from an insert: a sink batch (20,000 rows) stays one block
INSERT_BLOCK_SIZE = 100_000


def clickhouse_client(ch: ClickHouseSettings | None = None, **overrides: Any) -> Client:
    """A client of the server of ``ch`` (settings.clickhouse when None); ``overrides`` are further
    ``clickhouse_driver.Client`` arguments and win over the defaults above."""
    ch = ch or get_settings().clickhouse
    kwargs: dict[str, Any] = {
        "host": ch.host,
        "port": ch.port,
        "user": ch.user,
        "password": ch.password,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "send_receive_timeout": SEND_RECEIVE_TIMEOUT_S,
        "settings": {"insert_block_size": INSERT_BLOCK_SIZE},
    }
    if ch.alt_hosts.strip():
        kwargs["alt_hosts"] = ",".join(f"{host}:{port}" for host, port in ch.replica_addresses()[1:])
    return Client(**(kwargs | overrides))
