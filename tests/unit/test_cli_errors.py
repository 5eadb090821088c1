"""The errors a person makes end a command with one clear line on stderr and a non-zero exit code:
no traceback, no page of librdkafka log.

Run as real ``callback`` processes (librdkafka writes to the process's stderr itself, which
``CliRunner`` would not see), against a Kafka address where nothing listens: no servers needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from callback.cli import _OneLineErrors, one_line
from infra.rig import free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "carrier.yaml"
CALLBACK = str(Path(sys.executable).parent / "callback")


def run(
    *args: str, kafka: str | None = None, timeout: float = 60
) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "CALLBACK_KAFKA__BOOTSTRAP_SERVERS": kafka or f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = subprocess.run(
        [CALLBACK, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    return result, time.monotonic() - started


def assert_one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# --- Kafka not there ----------------------------------------------------------------------------


def test_quote_without_kafka_says_so_in_one_line_within_seconds():
    port = free_port()
    result, seconds = run(
        "quote", "--tariff", "retail-usd", "--number", "234", "--seconds", "60", kafka=f"127.0.0.1:{port}"
    )
    line = assert_one_line(
        result, f"Kafka is unreachable at 127.0.0.1:{port}", "callback stack up", "--config"
    )
    assert "connection refused" in line.lower()
    assert seconds < 10, f"took {seconds:.1f} s"


def test_quote_with_a_config_file_needs_no_kafka():
    result, _ = run(
        "quote", "--tariff", "retail-usd", "--number", "234", "--seconds", "60", "--config", str(SAMPLE)
    )
    assert result.returncode == 0, result.stderr
    assert "price" in result.stdout


@pytest.mark.parametrize("args", [["config", "load", str(SAMPLE)], ["topics", "list"]])
def test_other_one_shot_commands_without_kafka_fail_in_one_line(args):
    result, seconds = run(*args)
    assert_one_line(result, "Kafka is unreachable at", "callback stack up")
    assert seconds < 10


def test_librdkafka_log_goes_through_logging_once_per_condition():
    """A consumer polling a dead broker for 3 s: librdkafka repeats the failure every ~50-100 ms;
    the process logs it once, in the project's format, and at WARNING or above only."""
    script = textwrap.dedent(
        """
        import logging, sys
        fmt = "%(levelname)s %(name)s %(message)s"
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format=fmt)
        from confluent_kafka import Consumer
        from callback.kafka_io import consumer_config
        c = Consumer(consumer_config("probe", **{"reconnect.backoff.max.ms": 100}))
        c.subscribe(["pbx.events"])
        for _ in range(30):
            c.poll(0.1)
        c.close()
        """
    )
    env = {**os.environ, "CALLBACK_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    refused = [line for line in lines if "Connection refused" in line]
    assert len(refused) == 1, result.stderr
    assert refused[0].startswith(("ERROR librdkafka", "WARNING librdkafka"))
    assert not [line for line in lines if line.startswith("%")], "librdkafka wrote to stderr itself"
    assert not [line for line in lines if "librdkafka" in line and line.startswith(("INFO", "DEBUG"))]


def test_the_dedupe_forgets_a_condition_after_its_window():
    import logging

    from callback.kafka_io import OncePerCondition

    f = OncePerCondition(repeat_s=0.2)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(
            "librdkafka", logging.ERROR, "", 0, "%s [%s] %s", ("FAIL", "c#1", message), None
        )

    a = "[thrd:b:9092/bootstrap]: b:9092/bootstrap: Connect to ipv4#1.2.3.4:9092 failed: Connection refused"
    assert f.filter(record(a + " (after 0ms in state CONNECT)"))
    assert not f.filter(record(a + " (after 1ms in state CONNECT, 4 identical error(s) suppressed)"))
    assert f.filter(record(a.replace("9092", "9093")))  # another broker: another condition
    time.sleep(0.25)
    assert f.filter(record(a + " (after 0ms in state CONNECT)"))


# --- bad files and values -----------------------------------------------------------------------


def _quote_with(config: Path, seconds: str = "60") -> subprocess.CompletedProcess:
    return run(
        "quote", "--tariff", "retail-usd", "--number", "234", "--seconds", seconds, "--config", str(config)
    )[0]


def test_quote_with_an_incomplete_config_names_the_problems(tmp_path):
    broken = tmp_path / "carrier.yaml"
    broken.write_text("callback_settings: {scope: system}\ntariffs: []\n")
    line = assert_one_line(_quote_with(broken), f"{broken}:", "problems:")
    assert "servers" in line and "tariffs" in line


def test_quote_with_an_invalid_value_in_the_config_names_its_line(tmp_path):
    text = SAMPLE.read_text().replace('rate_per_minute: "0.08"', 'rate_per_minute: "eight"', 1)
    broken = tmp_path / "carrier.yaml"
    broken.write_text(text)
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if '"eight"' in line)
    assert_one_line(_quote_with(broken), f"carrier.yaml:{line_no}:", "rate_per_minute")


@pytest.mark.parametrize("seconds", ["1e400", "4294967296", "inf", "NaN", "-1", "soon"])
def test_quote_refuses_seconds_no_leg_can_last(seconds):
    assert_one_line(_quote_with(SAMPLE, seconds), "--seconds")


def test_quote_of_a_plain_leg_still_works():
    result = _quote_with(SAMPLE, "90.5")
    assert result.returncode == 0, result.stderr
    assert "answered        90.5 s" in result.stdout


def test_rerate_with_a_time_that_is_not_one():
    result, _ = run("rerate", "--since", "garbage")
    assert_one_line(result, "garbage")


def test_schemas_export_to_a_folder_that_cannot_be_written(tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    result, _ = run("schemas", "export", str(in_the_way / "contracts"))
    assert_one_line(result, "cannot write the JSON Schemas", "Not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result, _ = run("schemas", "export", str(locked))
        assert_one_line(result, "cannot write the JSON Schemas", "Permission denied")


def test_a_carrier_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    text = SAMPLE.read_text().replace("Lagos POP", "Lagos POP caf\xe9", 1)
    path.write_bytes(text.encode("latin-1"))
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if "caf\xe9" in line)
    assert_one_line(_quote_with(path), f"latin1.yaml:{line_no}:", "not UTF-8")
    loaded, _ = run("config", "load", "--dry-run", str(path))
    assert loaded.returncode == 1 and "Traceback" not in loaded.stderr
    assert f"latin1.yaml:{line_no}:" in loaded.stderr and "nothing published" in loaded.stderr


def test_a_carrier_file_with_a_key_written_twice(tmp_path):
    path = tmp_path / "twice.yaml"
    text = SAMPLE.read_text().replace("  wait_time_s: 30 ", "  wait_time_s: 30\n  wait_time_s: 60 ", 1)
    path.write_text(text)
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if "wait_time_s: 60" in line)
    loaded, _ = run("config", "load", "--dry-run", str(path))
    assert loaded.returncode == 1 and "Traceback" not in loaded.stderr
    assert (
        f"twice.yaml:{line_no}: callback_settings.wait_time_s: duplicate key 'wait_time_s'" in loaded.stderr
    )
    assert_one_line(_quote_with(path), f"twice.yaml:{line_no}:", "duplicate key")


# --- anything else ------------------------------------------------------------------------------


def _app_that_fails(exc: Exception) -> typer.Typer:
    app = typer.Typer(cls=_OneLineErrors, pretty_exceptions_enable=False)

    @app.callback()
    def root(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
        pass

    @app.command()
    def boom() -> None:
        raise exc

    return app


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback():
    app = _app_that_fails(KeyError("pbx9"))
    result = CliRunner().invoke(app, ["boom"])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == "error: unexpected KeyError: 'pbx9' (`callback --verbose ...` shows the traceback)"
    )
    verbose = CliRunner().invoke(app, ["-v", "boom"])
    assert isinstance(verbose.exception, KeyError)


def test_one_line_flattens_multi_line_messages():
    assert one_line(ValueError("first\n  second")) == "first second"
    assert one_line(PermissionError(13, "Permission denied", "/x")) == "/x: Permission denied"
