"""Test-session plumbing: an isolated local stack for the integration tests.

The environment is set when this file is imported, before any test module reads settings, and
subprocesses (``callback ...`` run by a test) inherit it. Defaults give the test stack its own
state folder and ports, away from a developer's ``callback stack up`` (9092/9000); any of them can
be overridden by exporting the variable first, e.g. when several people test on one machine:

    CALLBACK_STACK__KAFKA_PORT=29092 CALLBACK_STACK__KAFKA_CONTROLLER_PORT=29093 \
    CALLBACK_STACK__CLICKHOUSE_TCP_PORT=29000 CALLBACK_STACK__CLICKHOUSE_HTTP_PORT=28123 \
    CALLBACK_STACK__STATE_DIR=$PWD/.stack-mine .venv/bin/pytest

The stack starts only when a test asks for the ``stack`` fixture (integration tests); unit tests
never start it. ``CALLBACK_TEST_KEEP_STACK=1`` leaves it running after the session, so the next
run skips the start-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

_TEST_STACK_DEFAULTS = {
    "CALLBACK_STACK__STATE_DIR": str(REPO_ROOT / ".stack-test"),
    "CALLBACK_STACK__KAFKA_PORT": "19092",
    "CALLBACK_STACK__KAFKA_CONTROLLER_PORT": "19093",
    "CALLBACK_STACK__CLICKHOUSE_TCP_PORT": "19000",
    "CALLBACK_STACK__CLICKHOUSE_HTTP_PORT": "18123",
}


def _configure_test_env() -> None:
    """Point every client setting at the test stack (overriding a developer's own settings)."""
    for key, value in _TEST_STACK_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ["CALLBACK_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{os.environ['CALLBACK_STACK__KAFKA_PORT']}"
    os.environ["CALLBACK_KAFKA__SECURITY_PROTOCOL"] = "PLAINTEXT"
    os.environ["CALLBACK_CLICKHOUSE__HOST"] = "127.0.0.1"
    os.environ["CALLBACK_CLICKHOUSE__PORT"] = os.environ["CALLBACK_STACK__CLICKHOUSE_TCP_PORT"]
    os.environ["CALLBACK_CLICKHOUSE__HTTP_PORT"] = os.environ["CALLBACK_STACK__CLICKHOUSE_HTTP_PORT"]
    os.environ.pop("CALLBACK_SETTINGS_FILE", None)  # a developer's carrier settings must not leak in

    from callback.settings import get_settings

    get_settings.cache_clear()


_configure_test_env()


@dataclass(frozen=True)
class StackEndpoints:
    """Where the test stack's servers listen."""

    bootstrap_servers: str
    clickhouse_host: str
    clickhouse_port: int
    clickhouse_http_port: int
    state_dir: Path

    def clickhouse_client(self, **kwargs: object):  # -> clickhouse_driver.Client
        """A client of the test stack's server, built like every other one (callback.clickhouse_io)."""
        from callback.clickhouse_io import clickhouse_client

        return clickhouse_client(host=self.clickhouse_host, port=self.clickhouse_port, **kwargs)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackEndpoints]:
    """Start (or reuse) the test stack with the topic catalogue and migrations applied."""
    from callback.settings import get_settings
    from infra import stack as local_stack

    get_settings.cache_clear()
    settings = get_settings()
    keep = os.environ.get("CALLBACK_TEST_KEEP_STACK") == "1"
    try:
        local_stack.up(provision=True)
    except BaseException:
        if not keep:
            local_stack.down()  # a half-started stack must not outlive the failed session
        raise
    try:
        yield StackEndpoints(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            clickhouse_host=settings.clickhouse.host,
            clickhouse_port=settings.clickhouse.port,
            clickhouse_http_port=settings.clickhouse.http_port,
            state_dir=Path(settings.stack.state_dir),
        )
    finally:
        if not keep:
            local_stack.down()
