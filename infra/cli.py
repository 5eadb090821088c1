"""``callback stack ...``, ``callback topics ...`` and ``callback migrate``.

``stack`` drives the embedded local servers (settings.stack); ``topics`` and ``migrate`` act on
whatever cluster settings.kafka / settings.clickhouse point at, so a carrier runs the same
provisioning on their own Kafka and ClickHouse. Problems the user can fix are printed as one red
line (no traceback) with exit code 1.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from callback.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")


def _user_errors() -> tuple[type[Exception], ...]:
    from confluent_kafka import KafkaException

    from callback.kafka_io import KafkaUnreachable
    from infra.migrate import MigrationError
    from infra.stack import StackError
    from infra.topics import TopicError

    return StackError, MigrationError, TopicError, KafkaException, KafkaUnreachable


def _kafka_admin_config() -> dict:
    """settings.kafka as a client config (``callback.kafka_io.base_config``), after checking (in
    seconds, one line if not) that Kafka answers there."""
    from callback.kafka_io import base_config, check_reachable

    check_reachable()
    return base_config()


def _one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can act on into one red line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _user_errors() as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None

    return wrapper


def _service_line(service: object) -> str:
    from infra.stack import ServiceStatus

    assert isinstance(service, ServiceStatus)
    ports = ", ".join(f"{label} {port}" for label, port in service.ports.items())
    products = {"kafka": "Kafka", "clickhouse": "ClickHouse", "zookeeper": "ZooKeeper"}
    product = products[service.name.split("-")[0]]  # kafka-2: node 2; clickhouse-2: replica 2
    version = f"{product} {service.version}" if service.version else product
    if not service.running:
        return f"{service.name:<12} not running   ({ports})"
    state = service.action or ("answering" if service.answering else "NOT answering")
    return f"{service.name:<12} {state:<15} {version:<20} pid {service.pid:<8} 127.0.0.1: {ports}"


# --- stack ---------------------------------------------------------------------------------------

stack_app = typer.Typer(help="The local Kafka + ClickHouse stack (state in settings.stack.state_dir).",
                        no_args_is_help=True)


@stack_app.command("up")
@_one_line_errors
def stack_up(
    provision: Annotated[bool, typer.Option(help="Also create topics and apply migrations.")] = True,
    clickhouse_replicas: Annotated[int | None, typer.Option(
        "--clickhouse-replicas", help="1 (one server) or 2 (two replicas of one shard and a ZooKeeper); "
        "kept in the state folder. Default: CALLBACK_STACK__CLICKHOUSE_REPLICAS, else what the folder has.",
        show_default=False)] = None,
    brokers: Annotated[int | None, typer.Option(
        "--brokers", help="Kafka nodes: 1, or 3 for a cluster that survives losing one (default: "
                          "CALLBACK_STACK__BROKERS, else what the state folder holds, else 1).")] = None,
) -> None:
    """Start Kafka and ClickHouse (if not running), wait until they answer, provision them."""
    from infra import stack

    report = stack.up(provision=provision, brokers=brokers, clickhouse_replicas=clickhouse_replicas)
    for service in report.services:
        typer.echo(_service_line(service))
    typer.echo(f"bootstrap   {stack.existing_layout().kafka_bootstrap}")
    if report.topics is not None:
        typer.echo(f"topics       {report.topics.summary()}")
        typer.echo(f"{'':<12} {report.topics.replication_line()}")
        typer.echo(f"migrations   {', '.join(report.migrations) if report.migrations else 'up to date'}")
    typer.echo(f"ready in {report.seconds:.1f} s (state in {stack.layout().root})")


@stack_app.command("down")
@_one_line_errors
def stack_down() -> None:
    """Stop the servers started by `stack up` (SIGTERM, SIGKILL after a timeout)."""
    from infra import stack

    for service in stack.down():
        pid = f" (pid {service.pid})" if service.pid else ""
        typer.echo(f"{service.name:<12} {service.action}{pid}")


@stack_app.command("status")
@_one_line_errors
def stack_status() -> None:
    """What runs, where (ports, pids), which versions, and the ClickHouse tables."""
    from infra import stack

    services = stack.status()
    for service in services:
        typer.echo(_service_line(service))
        if service.running:
            typer.echo(f"{'':<12} {service.detail}")
    clickhouse = next(s for s in services if s.name == "clickhouse")
    if clickhouse.answering:
        http_port = stack.layout().settings.clickhouse_http_port
        tables = stack.clickhouse_query(
            http_port, "SELECT name FROM system.tables WHERE database = 'callback' ORDER BY name")
        listing = textwrap.fill(", ".join(tables.split()) or "(none)", width=100,
                                initial_indent=f"{'':<13}tables in callback: ", subsequent_indent=" " * 13)
        typer.echo(listing)
    if not all(s.running for s in services):
        raise typer.Exit(3)


@stack_app.command("fetch-kafka", hidden=True)
@_one_line_errors
def stack_fetch_kafka() -> None:
    """Fetch the Kafka jars from Maven Central (once); used by scripts/bootstrap.sh."""
    from infra import stack

    libs = stack.ensure_kafka_jars()
    typer.echo(f"Kafka {stack.kafka_version(libs)} jars in {libs}")


# --- topics --------------------------------------------------------------------------------------

topics_app = typer.Typer(help="Topics of the catalogue on the cluster of settings.kafka.",
                         no_args_is_help=True)


@topics_app.command("apply")
@_one_line_errors
def topics_apply(
    replication_factor: Annotated[int | None, typer.Option(
        "--replication-factor", "-r", min=1,
        help="For created topics (min.insync.replicas follows it); default: 3 on a cluster of 3 or "
             "more brokers, else the number of brokers.",
    )] = None,
) -> None:
    """Create missing catalogue topics and set their catalogued configs."""
    from callback.kafka_io import check_reachable
    from infra.topics import apply_catalogue

    check_reachable()  # one line within seconds rather than the admin client's retries
    report = apply_catalogue(replication_factor=replication_factor)
    typer.echo(report.replication_line())
    for name in report.created:
        typer.echo(f"created  {name}")
    for name, diff in report.altered.items():
        typer.echo(f"altered  {name}: " + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in diff.items()))
    typer.echo(report.summary())


@topics_app.command("list")
@_one_line_errors
def topics_list() -> None:
    """Topics on the cluster with partitions and cleanup policy; flags catalogue topics that are missing."""
    from confluent_kafka.admin import AdminClient

    from infra.topics import current_configs, existing_topics
    from schemas.topics import BY_NAME

    admin = AdminClient(_kafka_admin_config())
    topics = existing_topics(admin)
    configs = current_configs(admin, sorted(topics))
    typer.echo(f"{'topic':<28} {'partitions':>10}  {'cleanup':<8} catalogue")
    for name in sorted(topics):
        policy = configs.get(name, {}).get("cleanup.policy") or "?"
        typer.echo(f"{name:<28} {topics[name]:>10}  {policy:<8} {'yes' if name in BY_NAME else 'no'}")
    for name in sorted(set(BY_NAME) - set(topics)):
        typer.secho(f"{name:<28} {'-':>10}  {'-':<8} MISSING (run `callback topics apply`)",
                    fg=typer.colors.YELLOW)


# --- migrate -------------------------------------------------------------------------------------


@_one_line_errors
def migrate(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Folder of NNNN_name.sql files (default: infra/migrations).")] = None,
) -> None:
    """Apply pending ClickHouse migrations to the server of settings.clickhouse, or to every replica
    of settings.clickhouse.cluster (host:port and alt_hosts) as Replicated tables."""
    from clickhouse_driver.errors import Error as ClickHouseError

    from infra.migrate import MIGRATIONS_DIR, MigrationError
    from infra.migrate import migrate as apply

    ch = get_settings().clickhouse
    where = f"{ch.host}:{ch.port}" + (f" (cluster {ch.cluster}, also {ch.alt_hosts})" if ch.cluster else "")
    try:
        done = apply(ch, directory or MIGRATIONS_DIR)
    except (ClickHouseError, ValueError) as exc:  # refused, auth, a bad alt_hosts: user-fixable settings
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"ClickHouse at {where}: {first_line}") from exc
    typer.echo(f"applied {', '.join(done)}" if done else "migrations up to date")


def demo(
    callbacks: Annotated[
        int, typer.Option("--callbacks", min=1, max=20_000, help="callbacks to place")
    ] = 300,
    over: Annotated[float, typer.Option("--over", min=1.0, help="seconds over which they are placed")] = 60.0,
    speed: Annotated[
        float,
        typer.Option("--speed", min=0.1, max=20.0, help="PBX simulator speed: 2 = subscribers twice as fast"),
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="the same seed plays the same scenario")] = 7,
    chaos: Annotated[bool, typer.Option("--chaos", help="SIGKILL and restart processes, cut an AMI "
                                        "connection and pause ClickHouse while it runs")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="leave the stack and the processes running")] = False,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="logs, journal and the report")] = Path(".demo"),
) -> None:
    """Play a carrier's callback traffic through the whole pipeline and check every outcome and
    charge (make run)."""
    from infra.demo.run import DemoError, DemoOptions, run_demo
    from infra.stack import StackError

    options = DemoOptions(callbacks=callbacks, over_s=over, speed=speed, seed=seed, chaos=chaos, keep=keep,
                          run_dir=run_dir)
    try:
        code = run_demo(options)
    except (DemoError, StackError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Mount the infra commands on the root ``callback`` app."""
    app.add_typer(stack_app, name="stack")
    app.add_typer(topics_app, name="topics")
    app.command("migrate")(migrate)
    app.command("demo")(demo)
