"""The topic catalogue: every Kafka topic of the pipeline, defined once.

``callback stack up`` (and ``callback topics apply`` against a carrier's cluster) creates what is
missing from this list; the JSON Schema export names its files after it; producers and consumers
import the names from here instead of spelling strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DAY_MS = 24 * 3600 * 1000

CleanupPolicy = Literal["delete", "compact"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    #: what the record key is, in words other teams can rely on
    key: str
    #: dotted path of the pydantic model of the record value
    value_model: str
    partitions: int
    cleanup_policy: CleanupPolicy = "delete"
    #: retention in ms for delete topics; None = broker default; compacted topics keep the last value per key
    retention_ms: int | None = 7 * DAY_MS
    description: str = ""
    extra_configs: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        """Topic-level configs as the broker wants them."""
        out = {"cleanup.policy": self.cleanup_policy}
        if self.cleanup_policy == "delete" and self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        if self.cleanup_policy == "compact":
            out["min.cleanable.dirty.ratio"] = "0.1"
            out["segment.ms"] = str(3600 * 1000)
        out.update(self.extra_configs)
        return out


# --- stream topics -----------------------------------------------------------------------------
PBX_EVENTS = TopicSpec(
    "pbx.events",
    "callback_id when the channel carries CALLBACK_ID, else the Asterisk Linkedid",
    "schemas.pbx_events.PbxEventRecord",
    6,
    description="Domain events translated from Asterisk AMI",
)
PBX_COMMANDS = TopicSpec(
    "pbx.commands",
    "callback_id",
    "schemas.pbx_commands.PbxCommandRecord",
    6,
    description="Commands for the originator: originate, hangup, redirect to IVR / leg B, setvar",
)
CALLBACK_REQUESTS = TopicSpec(
    "callback.requests",
    "callback_id",
    "schemas.callback.CallbackInitiation",
    6,
    description="Callback initiations: a call to an access-number DID, or a web request",
)
CALLBACK_SESSIONS = TopicSpec(
    "callback.sessions",
    "callback_id",
    "schemas.callback.SessionTransition",
    6,
    description="Every state transition of a callback session",
)
CALLBACK_LEGS = TopicSpec(
    "callback.legs",
    "payer key '<kind>:<id>' (all of a payer's legs on one partition, whose rater owns its balance)",
    "schemas.callback.FinishedLeg",
    6,
    description="Finished legs (initiation, A, B) ready to be rated",
)
CDR_RERATES = TopicSpec(
    "cdr.rerates",
    "payer key '<kind>:<id>', as on callback.legs",
    "schemas.rating.RerateRequest",
    6,
    retention_ms=30 * DAY_MS,
    description="Stored legs priced again by `callback rerate`, for the rater owning the payer to apply; "
    "partitioned like callback.legs",
)
CDR_RATED = TopicSpec(
    "cdr.rated",
    "leg_id",
    "schemas.rating.RatedCdr",
    6,
    retention_ms=30 * DAY_MS,
    description="Priced legs; the ClickHouse sink stores them",
)
ACCOUNTS_BALANCES = TopicSpec(
    "accounts.balances",
    "payer key '<kind>:<id>' e.g. 'user:42', 'card:1234567890'",
    "schemas.rating.BalanceUpdate",
    6,
    cleanup_policy="compact",
    retention_ms=None,
    description="Latest balance of every payer (compacted)",
)
ACCOUNTS_LEDGER = TopicSpec(
    "accounts.ledger",
    "payer key '<kind>:<id>', as on accounts.balances",
    "schemas.rating.LedgerEntry",
    6,
    retention_ms=30 * DAY_MS,
    description="Every change to a payer's balance, leg by leg, in order per payer",
)

# --- the processors' own topics (docs/processors.md) ---------------------------------------------
#: Faust application id of ``callback processors``: its consumer group, and the prefix of the
#: changelog topics below (named as Faust names them, so the catalogue creates exactly those).
PROCESSORS_APP_ID = "callback-processors"

CALLBACK_CONTROL = TopicSpec(
    "callback.control",
    "callback_id",
    "schemas.control.ControlRecordValue",
    6,
    retention_ms=1 * DAY_MS,
    description="Timer ticks and fraud-guard verdicts for the session agent (internal)",
)
CALLBACK_ADMISSION = TopicSpec(
    "callback.admission",
    "the number called back",
    "schemas.control.AdmissionRecordValue",
    1,
    retention_ms=1 * DAY_MS,
    description="Admission requests and releases for the fraud guard; one partition: exact counts",
)
SESSIONS_CHANGELOG = TopicSpec(
    f"{PROCESSORS_APP_ID}-sessions-changelog",
    "callback_id",
    "processors.state.Session",
    6,
    "compact",
    None,
    description="State of every callback session (the processors' table; internal)",
    # small segments are compacted soon: a worker without the table on disk replays little more
    # than one record per session, and forgotten sessions' tombstones go after ten minutes
    extra_configs={"segment.ms": str(10 * 60 * 1000), "delete.retention.ms": str(10 * 60 * 1000)},
)
GUARD_CHANGELOG = TopicSpec(
    f"{PROCESSORS_APP_ID}-guard-changelog",
    "'ani:<number>' or 'did:<number>'",
    "processors.guard.GuardEntry",
    1,
    "compact",
    None,
    description="Fraud-guard counters per number and per access number (internal)",
    extra_configs={"segment.ms": str(10 * 60 * 1000), "delete.retention.ms": str(10 * 60 * 1000)},
)

# --- reference data (compacted, keyed by natural id) ---------------------------------------------
CONFIG_SETTINGS = TopicSpec(
    "config.callback_settings",
    "scope: 'system', 'did:<number>' or 'dialplan:<id>'",
    "schemas.reference.CallbackSettings",
    1,
    "compact",
    None,
)
CONFIG_USERS = TopicSpec("config.users", "user id", "schemas.reference.User", 1, "compact", None)
CONFIG_DEVICES = TopicSpec("config.devices", "device id", "schemas.reference.Device", 1, "compact", None)
CONFIG_CARDS = TopicSpec("config.cards", "card number", "schemas.reference.CallingCard", 1, "compact", None)
CONFIG_TARIFFS = TopicSpec("config.tariffs", "tariff id", "schemas.reference.Tariff", 1, "compact", None)
CONFIG_DIDS = TopicSpec(
    "config.dids", "DID number (E.164 digits)", "schemas.reference.Did", 1, "compact", None
)
CONFIG_DIALPLANS = TopicSpec(
    "config.dialplans", "dial plan id", "schemas.reference.CallbackDialPlan", 1, "compact", None
)
CONFIG_SERVERS = TopicSpec(
    "config.servers", "server id", "schemas.reference.CallbackServer", 1, "compact", None
)

# --- credentials (compacted; read by the web API alone: docs/architecture.md, "Credentials") -------
AUTH_WEB_CREDENTIALS = TopicSpec(
    "auth.web_credentials",
    "user id",
    "schemas.credentials.WebCredentials",
    1,
    "compact",
    None,
    description=(
        "Web API logins (password hash, API-key digest) per user; written by `callback config load`, "
        "read by `callback web` only: restrict it to those two with Kafka ACLs"
    ),
)


def _dead_letter(source: TopicSpec) -> TopicSpec:
    return TopicSpec(
        f"dlq.{source.name}",
        "the original record key",
        "schemas.envelope.DeadLetter",
        1,
        retention_ms=30 * DAY_MS,
        description=f"Records of {source.name} that could not be processed",
    )


STREAM_TOPICS: tuple[TopicSpec, ...] = (
    PBX_EVENTS,
    PBX_COMMANDS,
    CALLBACK_REQUESTS,
    CALLBACK_SESSIONS,
    CALLBACK_LEGS,
    CDR_RERATES,
    CDR_RATED,
    ACCOUNTS_BALANCES,
    ACCOUNTS_LEDGER,
    CALLBACK_CONTROL,
    CALLBACK_ADMISSION,
    SESSIONS_CHANGELOG,
    GUARD_CHANGELOG,
)
CONFIG_TOPICS: tuple[TopicSpec, ...] = (
    CONFIG_SETTINGS,
    CONFIG_USERS,
    CONFIG_DEVICES,
    CONFIG_CARDS,
    CONFIG_TARIFFS,
    CONFIG_DIDS,
    CONFIG_DIALPLANS,
    CONFIG_SERVERS,
)
#: topics other services must not read (not in ``CONFIG_TOPICS``, which every process may follow)
CREDENTIAL_TOPICS: tuple[TopicSpec, ...] = (AUTH_WEB_CREDENTIALS,)
DEAD_LETTER_TOPICS: tuple[TopicSpec, ...] = tuple(
    _dead_letter(t)
    for t in (
        PBX_EVENTS,
        PBX_COMMANDS,
        CALLBACK_REQUESTS,
        CALLBACK_LEGS,
        CDR_RERATES,
        CDR_RATED,
        CALLBACK_CONTROL,
        CALLBACK_ADMISSION,
    )
)

CATALOGUE: tuple[TopicSpec, ...] = STREAM_TOPICS + CONFIG_TOPICS + CREDENTIAL_TOPICS + DEAD_LETTER_TOPICS
BY_NAME: dict[str, TopicSpec] = {t.name: t for t in CATALOGUE}


@dataclass(frozen=True)
class Replication:
    """How many copies of each partition the catalogue's topics keep, and how many must have a
    write before an ``acks=all`` producer (every producer of the pipeline) is told it is stored."""

    factor: int
    min_insync_replicas: int

    @classmethod
    def for_factor(cls, factor: int) -> Replication:
        """One copy may be lost without losing or refusing a write: ``min.insync.replicas`` is one
        below the factor, but at least 1 and at most 2 (a higher one would stop every producer as
        soon as two brokers are away, for little more safety)."""
        if factor < 1:
            raise ValueError(f"replication factor {factor} < 1")
        return cls(factor, max(1, min(2, factor - 1)))

    @classmethod
    def for_brokers(cls, brokers: int) -> Replication:
        """Three copies on a cluster of three or more brokers (a broker may fail while another one
        is restarted), else one per broker: the local single-broker stack gets 1 and 1."""
        return cls.for_factor(max(1, min(3, brokers)))


def dead_letter_topic(source_topic: str) -> str:
    """Name of the dead-letter topic for records read from ``source_topic``."""
    name = f"dlq.{source_topic}"
    if name not in BY_NAME:
        raise KeyError(f"no dead-letter topic catalogued for {source_topic!r}")
    return name
