"""The ``callback`` commands a developer or a carrier types, run as real subprocesses.

The environment conftest.py set (test stack ports) is inherited, so these talk to the test stack.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.topics import CATALOGUE

REPO_ROOT = Path(__file__).resolve().parents[2]


def _callback(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callback.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=120, check=False)


@pytest.mark.integration
def test_stack_status_prints_versions_ports_and_tables(stack) -> None:
    result = _callback("stack", "status")
    assert result.returncode == 0, result.stderr
    assert "Kafka 3.9.1" in result.stdout
    assert re.search(r"ClickHouse \d+\.\d+", result.stdout)
    assert f"Kafka broker {stack.bootstrap_servers.rsplit(':', 1)[1]}" in result.stdout
    assert f"ClickHouse native {stack.clickhouse_port}" in result.stdout
    assert "schema_migrations" in result.stdout


@pytest.mark.integration
def test_topics_list_shows_the_whole_catalogue(stack) -> None:
    result = _callback("topics", "list")
    assert result.returncode == 0, result.stderr
    assert "MISSING" not in result.stdout
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}
    assert {spec.name for spec in CATALOGUE} <= listed


@pytest.mark.integration
def test_topics_apply_and_migrate_are_idempotent(stack) -> None:
    topics = _callback("topics", "apply")
    assert topics.returncode == 0, topics.stderr
    assert f"0 created, 0 altered, {len(CATALOGUE)} unchanged" in topics.stdout
    migrate = _callback("migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "migrations up to date" in migrate.stdout


def test_busy_port_is_one_red_line_without_traceback(tmp_path: Path) -> None:
    """No server is started: the port check comes first, so this needs no stack."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        env = {**os.environ, "CALLBACK_STACK__STATE_DIR": str(tmp_path / "stack"),
               "CALLBACK_STACK__KAFKA_PORT": str(busy)}
        result = _callback("stack", "up", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [f"error: port {busy} (Kafka broker) is busy: stop what listens there "
                           "or set CALLBACK_STACK__KAFKA_PORT to a free port"]
    assert not list((tmp_path / "stack").glob("*/*.pid"))
