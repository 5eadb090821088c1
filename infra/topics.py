"""Make a Kafka cluster's topics match the catalogue in ``schemas.topics``.

Used by ``callback stack up`` on the local broker and by ``callback topics apply`` on a carrier's
own cluster. Missing topics are created with the catalogued partitions and configs; existing ones
get their catalogued configs set (other configs an operator set are left alone). Partition counts
are never changed: adding partitions moves keys to other partitions and breaks per-callback
ordering, so a difference is reported for a human to decide; so is a replication factor below the
chosen one (raising it is a partition reassignment, an operator's job).

Replication follows the cluster (``schemas.topics.Replication``): on three or more brokers topics
get 3 copies and ``min.insync.replicas=2``, so an ``acks=all`` write survives the loss of a broker
and is still accepted while one is away; on the local single-broker stack 1 and 1. The broker
count is what the admin client sees, unless the caller names the factor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from callback.kafka_io import base_config
from callback.settings import KafkaSettings
from schemas.topics import CATALOGUE, Replication, TopicSpec

log = logging.getLogger(__name__)

#: seconds an admin request may take; topic creation on a loaded cluster can be slow
ADMIN_TIMEOUT_S = 30.0
#: a topic whose creation failed for a passing reason is asked for again, this many times in all
CREATE_ATTEMPTS = 5
#: passing failures librdkafka does not mark retriable: a broker handle dropped while the request
#: waited (a new cluster's metadata still changing), a lost connection, a timeout
_TRANSIENT = (KafkaError._DESTROY_BROKER, KafkaError._TRANSPORT, KafkaError._TIMED_OUT)


class TopicError(RuntimeError):
    """The cluster refused a catalogue change; the message names the topic and the broker's reason."""


@dataclass
class CatalogueReport:
    """What ``apply_catalogue`` did, topic by topic."""

    created: list[str] = field(default_factory=list)
    #: topic -> {config: (old value, new value)}
    altered: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    #: topic -> (partitions on the cluster, partitions in the catalogue); left for a human to fix
    partition_drift: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: what created topics got, and the brokers the cluster listed when it was chosen
    replication: Replication = field(default_factory=lambda: Replication(1, 1))
    brokers: int = 0
    #: topic -> (its replication factor, the chosen one) where it has fewer copies; not changed
    replication_drift: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.created)} created, {len(self.altered)} altered, {len(self.unchanged)} unchanged"
        if self.partition_drift:
            drift = ", ".join(f"{name} has {have} (catalogue {want})"
                              for name, (have, want) in sorted(self.partition_drift.items()))
            text += f"; partition counts differ: {drift}"
        if self.replication_drift:
            drift = ", ".join(f"{name} has {have}"
                              for name, (have, _want) in sorted(self.replication_drift.items()))
            text += f"; fewer than {self.replication.factor} replicas: {drift}"
        return text

    def replication_line(self) -> str:
        """What the topics were created with, and why: the CLI prints it."""
        brokers = f"{self.brokers} broker{'s' if self.brokers != 1 else ''}"
        return (f"replication factor {self.replication.factor}, "
                f"min.insync.replicas {self.replication.min_insync_replicas} ({brokers} in the cluster)")


def existing_topics(admin: AdminClient, metadata: ClusterMetadata | None = None) -> dict[str, int]:
    """Topic name -> partition count, without Kafka's internal topics."""
    metadata = metadata or admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    return {name: len(meta.partitions) for name, meta in metadata.topics.items() if not name.startswith("__")}


def replication_factors(metadata: ClusterMetadata) -> dict[str, int]:
    """Topic name -> its replication factor (the fewest replicas of any of its partitions)."""
    return {name: min((len(p.replicas) for p in meta.partitions.values()), default=0)
            for name, meta in metadata.topics.items() if not name.startswith("__")}


def _min_insync_change(have: str | None, replication: Replication, topic_factor: int) -> str | None:
    """The ``min.insync.replicas`` to set on an existing topic, or None to leave it.

    Raised to the chosen value, never lowered (an operator may want stricter), and never to as
    many as the topic has replicas: that would refuse every ``acks=all`` write once one is away.
    """
    possible = Replication.for_factor(max(1, topic_factor)).min_insync_replicas
    want = min(replication.min_insync_replicas, possible)
    current = int(have) if have and have.isdigit() else 1
    return str(want) if current < want else None


def current_configs(admin: AdminClient, names: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """Topic name -> {config name: value} as the broker reports it (defaults included)."""
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    if not resources:
        return {}
    futures = admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
    return {resource.name: {key: entry.value for key, entry in future.result().items()}
            for resource, future in futures.items()}


def _create(admin: AdminClient, specs: list[TopicSpec], replication: Replication) -> list[str]:
    if not specs:
        return []
    isr = {"min.insync.replicas": str(replication.min_insync_replicas)}
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication.factor,
                    config=s.configs() | isr) for s in specs]
    created: list[str] = []
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        again = []
        by_name = {topic.topic: topic for topic in new}
        for name, future in admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S,
                                                request_timeout=ADMIN_TIMEOUT_S).items():
            try:
                future.result()
                created.append(name)
                log.debug("topics: created %s", name)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent apply won the race
                    continue
                if attempt < CREATE_ATTEMPTS and (error.retriable() or error.code() in _TRANSIENT):
                    log.warning("topics: creating %s failed (%s); trying again", name, error.str())
                    again.append(by_name[name])
                    continue
                raise TopicError(f"cannot create topic {name}: {error.str()}") from exc
        if not again:
            break
        new = again
        time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
    log.info("topics: created %d topic(s)", len(created))
    return created


def _alter(admin: AdminClient, changes: dict[str, dict[str, tuple[str | None, str]]]) -> None:
    """Set only the differing configs (incremental: operator-set configs we do not catalogue stay)."""
    if not changes:
        return
    resources = [
        ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(key, new, incremental_operation=AlterConfigOpType.SET)
            for key, (_old, new) in diff.items()])
        for name, diff in changes.items()
    ]
    futures = admin.incremental_alter_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
    for resource, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise TopicError(f"cannot alter configs of topic {resource.name}: {exc.args[0].str()}") from exc
        log.info("topics: altered %s %s", resource.name, changes[resource.name])


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout_s: float = 60.0) -> None:
    """Return once every partition of ``topics`` has a leader: a topic is created at once but led
    a moment later, and a client that reads it in between gets NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout_s
    waiting = set(topics)
    while waiting:
        metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        for name in list(waiting):
            topic = metadata.get(name)
            if topic is not None and topic.error is None and topic.partitions and all(
                part.leader >= 0 and part.error is None for part in topic.partitions.values()
            ):
                waiting.discard(name)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics without a leader {timeout_s:.0f} s after creation: {sorted(waiting)}")
        time.sleep(0.1)


def apply_catalogue(
    kafka: KafkaSettings | str | None = None,
    replication_factor: int | None = None,
    specs: Iterable[TopicSpec] = CATALOGUE,
) -> CatalogueReport:
    """Create missing catalogue topics and align the configs of existing ones.

    ``kafka`` is the cluster as ``callback.kafka_io.base_config`` takes it: settings.kafka when None
    (SASL/TLS from its extra settings), or a bare bootstrap address (the local stack's broker).
    ``replication_factor`` applies to created topics only; None chooses it from the brokers the
    cluster lists (``Replication.for_brokers``). ``min.insync.replicas`` follows the factor, on
    created topics and, raised only, on existing ones (``_min_insync_change``).
    """
    admin = AdminClient(base_config(kafka))
    specs = list(specs)
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    report = CatalogueReport(brokers=len(metadata.brokers))
    report.replication = (Replication.for_brokers(report.brokers) if replication_factor is None
                          else Replication.for_factor(replication_factor))
    existing = existing_topics(admin, metadata)
    factors = replication_factors(metadata)
    report.created = _create(admin, [s for s in specs if s.name not in existing], report.replication)
    if report.created:
        wait_for_leaders(admin, report.created)

    present = [s for s in specs if s.name in existing]
    configs = current_configs(admin, [s.name for s in present])
    changes: dict[str, dict[str, tuple[str | None, str]]] = {}
    for spec in present:
        have = configs.get(spec.name, {})
        diff = {key: (have.get(key), want) for key, want in spec.configs().items() if have.get(key) != want}
        isr = _min_insync_change(have.get("min.insync.replicas"), report.replication, factors[spec.name])
        if isr is not None:
            diff["min.insync.replicas"] = (have.get("min.insync.replicas"), isr)
        if factors[spec.name] < report.replication.factor:
            report.replication_drift[spec.name] = (factors[spec.name], report.replication.factor)
        if diff:
            changes[spec.name] = diff
        else:
            report.unchanged.append(spec.name)
        if existing[spec.name] != spec.partitions:
            report.partition_drift[spec.name] = (existing[spec.name], spec.partitions)
            log.warning("topics: %s has %d partitions, the catalogue says %d "
                        "(not changed: that would move keys)",
                        spec.name, existing[spec.name], spec.partitions)
    _alter(admin, changes)
    report.altered = changes
    return report
