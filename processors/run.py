"""The life of a ``callback processors`` process: checks before the start, and no exit on its own.

Faust stops the whole worker on some faults it cannot ride out (Kafka unreachable at start-up, a
crashed service), while a carrier's stage must never exit by itself (docs/processors.md,
"Running it"). So, before Faust starts:

* a mistake of the person starting it gets one clear line and exit code 2: the web or metrics
  port is taken (another worker on this host?), or the cluster lacks the catalogue's topics
  (``callback topics apply`` was not run);
* Kafka that does not answer yet is waited for, with a growing pause, as long as it takes;

and when the worker stops for any other reason than SIGTERM / SIGINT, the process replaces itself
with a fresh one (``exec``: same pid, same arguments) after a pause that grows with each restart
(1, 2, 4 ... 30 s): in-memory state is rebuilt from Kafka, as after any restart.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from callback.kafka_io import base_config
from callback.settings import Settings
from infra.process import port_is_free
from infra.topics import existing_topics
from processors.app import SESSION_INPUTS, StaleLocalTables, local_tables_dir, run_worker
from schemas.topics import (
    CALLBACK_ADMISSION,
    CALLBACK_LEGS,
    CALLBACK_SESSIONS,
    CONFIG_TOPICS,
    GUARD_CHANGELOG,
    PBX_COMMANDS,
    SESSIONS_CHANGELOG,
    dead_letter_topic,
)

log = logging.getLogger(__name__)

RESTARTS_ENV = "CALLBACK_PROCESSORS_RESTARTS"
MAX_PAUSE_S = 30.0

#: every topic the worker reads or writes
REQUIRED_TOPICS: tuple[str, ...] = (
    *SESSION_INPUTS,
    CALLBACK_ADMISSION.name,
    SESSIONS_CHANGELOG.name,
    GUARD_CHANGELOG.name,
    PBX_COMMANDS.name,
    CALLBACK_SESSIONS.name,
    CALLBACK_LEGS.name,
    *(t.name for t in CONFIG_TOPICS),
    *(dead_letter_topic(t) for t in (*SESSION_INPUTS, CALLBACK_ADMISSION.name)),
)


class StartupError(Exception):
    """Something a person must fix before the worker can start; the message is the one line to show."""


def check_ports(settings: Settings) -> None:
    conf = settings.processors
    if not port_is_free(conf.web_port):
        raise StartupError(
            f"web port {conf.web_port} is in use (another processors worker on this host?): give each "
            "worker its own --web-port"
        )
    if conf.metrics_port and not port_is_free(conf.metrics_port):
        raise StartupError(f"metrics port {conf.metrics_port} is in use: choose another --metrics-port")


def wait_for_kafka(settings: Settings, *, pause_s: float = 1.0) -> dict[str, int]:
    """The cluster's topics, once Kafka answers (retried with a growing pause, never given up)."""
    admin = AdminClient(base_config(settings.kafka))
    while True:
        try:
            return existing_topics(admin)
        except KafkaException as exc:
            log.warning("Kafka at %s does not answer (%s); retrying in %.0f s",
                        settings.kafka.bootstrap_servers, exc.args[0].str() if exc.args else exc, pause_s)
            time.sleep(pause_s)
            pause_s = min(MAX_PAUSE_S, pause_s * 2)


def check_topics(settings: Settings, topics: dict[str, int]) -> None:
    missing = [name for name in REQUIRED_TOPICS if name not in topics]
    if missing:
        raise StartupError(
            f"{len(missing)} topic(s) missing on {settings.kafka.bootstrap_servers}: {', '.join(missing)}; "
            "create them with `callback topics apply`"
        )


def run_processors(settings: Settings) -> int:
    """Checks, then the worker; on an unexpected stop, a fresh process (``exec``). Returns 0 after a
    clean stop; raises StartupError for what a person must fix."""
    check_ports(settings)
    check_topics(settings, wait_for_kafka(settings))
    if settings.processors.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.processors.metrics_port, addr="127.0.0.1")
    try:
        run_worker(settings)
        return 0
    except StaleLocalTables as exc:
        # the changelogs on Kafka are the truth: forget the disk copy and rebuild from them
        stale = local_tables_dir(settings)
        log.error("the tables on local disk do not belong to these changelogs (%s); removing %s and "
                  "rebuilding them from Kafka", str(exc).splitlines()[0], stale)
        shutil.rmtree(stale, ignore_errors=True)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    except SystemExit as exc:
        if exc.code in (0, None):
            return 0
        why = f"exit code {exc.code}"
    except Exception as exc:  # noqa: BLE001 - whatever it was, the stage must come back
        why = f"{type(exc).__name__}: {exc}"
    restarts = int(os.environ.get(RESTARTS_ENV, "0")) + 1
    pause = min(MAX_PAUSE_S, 2.0 ** min(restarts - 1, 5))
    log.critical("processors worker stopped unexpectedly (%s); starting a fresh one in %.0f s (restart %d)",
                 why, pause, restarts)
    time.sleep(pause)
    os.environ[RESTARTS_ENV] = str(restarts)
    os.execv(sys.executable, [sys.executable, *sys.argv])
    return 1  # not reached
