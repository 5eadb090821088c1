"""Kafka client configuration shared by every process, and the dead-letter writer.

Producers are idempotent with acks=all (docs/processors.md, "Guarantees"); consumers never auto-commit,
so each process commits only after its effect is durable. ``extra`` from settings lets a carrier add
SASL/TLS.

Every producer partitions keys with ``murmur2_random``, the Java client's hash, which is also what
aiokafka (and so the Faust processors) uses. librdkafka's default (CRC32) would put most keys on
another partition than the processors' own sends, and a callback's initiation, PBX events and timer
ticks must meet on the one partition whose worker owns the session.

librdkafka's own log goes through ``logging`` (logger ``librdkafka``), never straight to stderr:
WARNING and above only, and each condition (e.g. "connect to 127.0.0.1:9092 failed: Connection
refused") once per ``LOG_REPEAT_S`` however often the library repeats it. A broker that is down
therefore costs one log line, not one every 50 ms. The library hands its log over when the client
is polled, so a client nobody polls logs nothing.

``check_reachable`` is for one-shot commands (``callback quote``, ``config load``, ``topics``): it
says in one line, within seconds, that Kafka does not answer at the configured address, instead of
letting a client retry for its full timeout.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from callback.settings import KafkaSettings, get_settings
from schemas.envelope import DeadLetter
from schemas.topics import dead_letter_topic

log = logging.getLogger(__name__)

#: a condition librdkafka keeps reporting is logged again after this long (it may have cleared and
#: come back; a process that runs for days should say so)
LOG_REPEAT_S = 300.0
#: what varies between two reports of the same condition: timings and repeat counters
_LOG_NOISE = re.compile(
    r"\s*\((?:after \d+ms in state \w+)?(?:, )?(?:\d+ identical error\(s\) suppressed)?\)|\d+ms"
)


class OncePerCondition(logging.Filter):
    """Passes a librdkafka log record only the first time its condition is seen within ``repeat_s``.

    A condition is the facility plus the message without its timings and counters; the client's
    name is left out, so the consumer and the producer of one process failing to reach the same
    broker are one condition."""

    def __init__(self, repeat_s: float = LOG_REPEAT_S, capacity: int = 1000) -> None:
        super().__init__()
        self.repeat_s = repeat_s
        self.capacity = capacity
        self._seen: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def condition(record: logging.LogRecord) -> str:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 3:  # confluent-kafka logs ("%s [%s] %s", facility, client name, message)
            facility, _client, message = args
            return f"{facility} {_LOG_NOISE.sub('', str(message))}"
        return _LOG_NOISE.sub("", record.getMessage())

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, self.condition(record))
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.repeat_s:
                return False
            self._seen[key] = now
            if len(self._seen) > self.capacity:  # bounded: forget the oldest conditions
                for old in sorted(self._seen, key=self._seen.__getitem__)[: len(self._seen) // 2]:
                    del self._seen[old]
        return True


#: every client's librdkafka log: WARNING and above, each condition once per LOG_REPEAT_S
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
LIBRDKAFKA_LOG.setLevel(logging.WARNING)
LIBRDKAFKA_LOG.addFilter(OncePerCondition())

#: for probes whose failure is reported by the caller in its own words
_SILENT = logging.getLogger("librdkafka.probe")
_SILENT.disabled = True


def base_config(kafka: KafkaSettings | str | None = None, *, silent: bool = False) -> dict[str, Any]:
    """The librdkafka settings every client starts from: bootstrap, security protocol, the extra
    settings (SASL/TLS) and the log handler above; the one place a client config is built.

    ``kafka`` is the cluster: settings.kafka when None, other ``KafkaSettings``, or a bare bootstrap
    address (a plaintext broker, e.g. the local stack's own before any settings point at it).
    ``silent`` drops librdkafka's log, for probes whose failure the caller reports in its own words.
    """
    if kafka is None:
        kafka = get_settings().kafka
    elif isinstance(kafka, str):
        kafka = KafkaSettings(bootstrap_servers=kafka)
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
        "logger": _SILENT if silent else LIBRDKAFKA_LOG,
    }
    conf.update(kafka.extra)
    return conf


#: the replication factor of topics made outside the catalogue (benchmarks, tests): the broker's
#: ``default.replication.factor``, 1 on the single local broker, 3 on the local cluster, whose
#: ``min.insync.replicas=2`` refuses every acks=all write to a topic with a single replica
BROKER_DEFAULT_RF = -1


class KafkaUnreachable(Exception):
    """Kafka does not answer at the configured address; the message is one line with what to do."""

    def __init__(self, bootstrap: str, detail: str, hint: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.detail = detail
        self.hint = hint or UNREACHABLE_HINT
        super().__init__(f"Kafka is unreachable at {bootstrap} ({detail}): {self.hint}")


UNREACHABLE_HINT = (
    "start the local stack with `callback stack up`, or point the settings at your cluster "
    "(CALLBACK_KAFKA__BOOTSTRAP_SERVERS or kafka.bootstrap_servers in CALLBACK_SETTINGS_FILE)"
)


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """(host, port) of each ``host:port`` in a bootstrap list (``PLAINTEXT://`` and ``[v6]`` allowed)."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip().rpartition("://")[2]
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def check_reachable(timeout_s: float = 5.0, hint: str | None = None) -> None:
    """Raise ``KafkaUnreachable`` unless a broker of the settings answers metadata within ``timeout_s``.

    First a plain TCP connect to each bootstrap address (a refused or unresolvable address fails at
    once), then a metadata request with the configured security settings, so a broker that accepts
    the connection but not our protocol or credentials is reported too. Silent: the caller reports.
    """
    bootstrap = get_settings().kafka.bootstrap_servers
    addresses = bootstrap_addresses(bootstrap)
    if not addresses:
        raise KafkaUnreachable(bootstrap or "''", "no bootstrap address configured", hint)
    problems = []
    for host, port in addresses:
        try:
            socket.create_connection((host, port), timeout=min(timeout_s, 3.0)).close()
            break
        except OSError as exc:
            problems.append((exc.strerror or str(exc) or type(exc).__name__).lower().rstrip("."))
    else:
        raise KafkaUnreachable(bootstrap, "; ".join(dict.fromkeys(problems)), hint)
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(base_config(silent=True))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        detail = error.str() if hasattr(error, "str") else str(error)
        raise KafkaUnreachable(
            bootstrap, f"no answer to a metadata request within {timeout_s:g} s: {detail}", hint
        ) from None


class ConsumerFailed(KafkaException):
    """The consumer reported an error it cannot recover from (a static member fenced, say): it has
    to be closed, and a new one subscribed, or the process has to end."""


def failed_for_good(err: KafkaError) -> bool:
    """Whether a consumer's error means it cannot go on: librdkafka marks some ``fatal()``, others
    only by the code ``_FATAL`` (the static member fenced after a broker pause comes as such)."""
    return err.fatal() or err.code() == KafkaError._FATAL


def is_record(msg: Message, where: str) -> bool:
    """Whether ``msg`` is a record to process: the one triage of what a consumer hands out.

    False for the end of a partition (``enable.partition.eof``) and for an error the client
    recovers from itself, which is logged (``where`` names the consumer). ``ConsumerFailed`` for an
    error it does not recover from (``failed_for_good``)."""
    err = msg.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        return False
    if failed_for_good(err):
        raise ConsumerFailed(err)
    log.warning("%s: %s", where, err.str())
    return False


#: a producer's defaults that ``kafka.extra`` may change (a carrier's own compression, say)
PRODUCER_TUNABLES: dict[str, Any] = {"linger.ms": 5, "compression.type": "lz4"}


def producer_config(transactional_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Every producer's settings: ``PRODUCER_TUNABLES`` under ``kafka.extra``, and over both what
    nothing may change (every write acknowledged by the in-sync replicas, idempotence, and the Java
    client's partitioner, so a key lands where other clients put it), then the caller's own."""
    conf = PRODUCER_TUNABLES | base_config() | {
        "acks": "all",
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    return conf


def consumer_config(group_id: str, *, read_committed: bool = True, **overrides: Any) -> dict[str, Any]:
    conf = base_config() | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
    }
    conf.update(overrides)
    return conf


def dead_letter(
    producer: Producer,
    *,
    source: str,
    source_topic: str,
    reason: str,
    error_kind: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None = None,
    offset: int | None = None,
    details: dict[str, Any] | None = None,
) -> DeadLetter:
    """Send an unprocessable record to ``dlq.<source_topic>`` with the reason and its original bytes."""
    letter = DeadLetter(
        source=source,
        source_topic=source_topic,
        source_partition=partition,
        source_offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value).decode() if value is not None else None,
        reason=reason,
        error_kind=error_kind,
        details=details or {},
    )
    producer.produce(dead_letter_topic(source_topic), key=key, value=letter.to_bytes())
    log.warning("dead-lettered %s[%s]@%s: %s (%s)", source_topic, partition, offset, reason, error_kind)
    return letter
