"""Helpers only tests use: an AMI client acting as another AMI user, a carrier file pointed at test
PBXes, topics of a test's own, and what a topic committed. What the demo and the benchmarks share
with the tests lives in ``infra.rig``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from callback.topic_reader import read_topics
from infra.rig import REPO_ROOT, LoopThread


class AmiClient:
    """A real panoramisk client on its own loop thread, for a test to act as 'another AMI user'."""

    def __init__(self, host: str, port: int, username: str = "callback", secret: str = "callback") -> None:
        from panoramisk import Manager

        self.loops = LoopThread()

        async def connect() -> Any:
            manager = Manager(
                loop=asyncio.get_running_loop(),
                host=host,
                port=port,
                username=username,
                secret=secret,
                events="off",
                ping_delay=60,
            )
            manager.connect()
            for _ in range(200):
                if manager.authenticated:
                    return manager
                await asyncio.sleep(0.05)
            raise AssertionError("test AMI client could not log in")

        self.manager = self.loops.run(connect())

    def send(self, action: dict[str, Any]) -> dict[str, Any]:
        async def send() -> Any:
            return await asyncio.wait_for(self.manager.send_action(action, as_list=False), 10)

        reply = self.loops.run(send())
        return dict(reply.items())

    def close(self) -> None:
        self.manager.close()
        self.loops.close()


def carrier_config_for(
    path: Path,
    servers: dict[str, tuple[str, int]],
    secret: str = "callback",
    base: Path | None = None,
    *,
    secret_in_file: bool = True,
) -> Path:
    """The example carrier YAML with its servers pointed at test PBXes: {server_id: (host, port)}.

    ``secret_in_file`` writes each server's ``ami_secret`` into the file, the deprecated way a
    ``--config`` process still accepts; without it the processes need ``ami_secret_env``."""
    import yaml

    data = yaml.safe_load((base or REPO_ROOT / "examples" / "carrier.yaml").read_text())
    kept = []
    for server in data["servers"]:
        server.pop("ami_secret", None)
        if server["server_id"] in servers:
            server["ami_host"], server["ami_port"] = servers[server["server_id"]]
            server["ami_username"] = "callback"
            kept.append(server)
    for server_id, (host, port) in servers.items():
        if server_id not in {s["server_id"] for s in kept}:
            kept.append(
                {"server_id": server_id, "ami_host": host, "ami_port": port, "ami_username": "callback"}
            )
    if secret_in_file:
        for server in kept:
            server["ami_secret"] = secret
    data["servers"] = kept
    ids = {s["server_id"] for s in kept}
    data["callback_settings"]["callback_server_id"] = kept[0]["server_id"]
    for did in data["dids"]:
        if did.get("pbx_id") not in ids:
            did["pbx_id"] = kept[0]["server_id"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


#: the topics of a rating run
RATING_TOPICS = ("legs", "rerates", "cdr", "balances", "ledger")


def run_topics(run: str, partitions: int = 3, names: tuple[str, ...] = RATING_TOPICS) -> dict[str, str]:
    """Topics of one test's own, ``test.<run>.<name>`` (``balances`` compacted, like the catalogue's)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from callback.kafka_io import BROKER_DEFAULT_RF, base_config

    topics = {what: f"test.{run}.{what}" for what in names}
    admin = AdminClient(base_config())  # kept referenced until the futures are done
    futures = admin.create_topics(
        [
            NewTopic(t, partitions, BROKER_DEFAULT_RF,
                     config={"cleanup.policy": "compact"} if what == "balances" else {})
            for what, t in topics.items()
        ]
    )
    for future in futures.values():
        future.result()
    return topics


def rater_args(run: str, topics: dict[str, str], batch_max: int) -> list[str]:
    """``callback rating`` on a test's own topics (``run_topics``) and group."""
    return [
        "rating",
        "--batch-max",
        str(batch_max),
        "--group-id",
        f"rater-{run}",
        "--legs-topic",
        topics["legs"],
        "--rerates-topic",
        topics["rerates"],
        "--cdr-topic",
        topics["cdr"],
        "--balances-topic",
        topics["balances"],
        "--ledger-topic",
        topics["ledger"],
    ]


def committed_keys(topic: str) -> list[str]:
    """The key of every committed record of ``topic``, in order per partition."""
    keys: list[str] = []
    read_topics(f"keys-{topic}", [topic], lambda m: keys.append(m.key().decode()))
    return keys
