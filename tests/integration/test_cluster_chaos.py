"""The whole pipeline on a local cluster while its parts die (issue 11, docs/deployment.md).

Three Kafka brokers (replication 3, ``min.insync.replicas`` 2), two ClickHouse replicas of one shard
(with ZooKeeper), two processors workers, two raters and two CDR sinks, the originator and the AMI
producer in front of the PBX simulator, which offers callbacks at a steady rate. During the load
one broker (the raters' group coordinator, the hardest one to lose), one rater and one processors
worker are SIGKILLed for good, and the ClickHouse replica the sinks write to is SIGKILLed (the
sinks fail over to the other). Afterwards:

* every callback reached a final state, and the PBX received exactly one Originate per leg-A
  attempt the pipeline recorded: no phone rang twice;
* every leg on ``callback.legs`` was charged exactly once (``cdr.rated`` holds each leg id once);
* every CDR is stored once, read from the replica that survived (``FINAL`` count and distinct
  leg ids equal the legs; the revenue equals what the rater charged);
* every payer's balance is its opening balance minus exactly its charges.

The killed replica is started again before the final reads only so that the survivor can fetch
the parts that existed on the dead one alone (replication is asynchronous: docs/deployment.md,
"What a lost replica costs"); every read is on the survivor.

Its own stack, on ports 27000-27200 (``CALLBACK_TEST_CLUSTER_PORT_BASE`` moves them), beside the
session's single-broker stack.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.process import wait_until
from infra.rig import CallbackProcess, ami_secret_env, free_port, producer_args

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
]

BASE = int(os.environ.get("CALLBACK_TEST_CLUSTER_PORT_BASE", "27000"))
RATE_PER_S = float(os.environ.get("CALLBACK_TEST_CLUSTER_RATE", "12"))
SECONDS = float(os.environ.get("CALLBACK_TEST_CLUSTER_SECONDS", "170"))
#: when each part is killed, as a share of the load's length
KILLS = {"the raters' group coordinator": 0.15, "rater 2": 0.35, "processors worker 2": 0.55,
         "ClickHouse replica 1": 0.7}
#: payers: the callers are spread over this many users (and the callback owner pays too)
USERS = 12


@dataclass
class Cluster:
    layout: Any
    tmp: Path

    def kill(self, proc: Any) -> None:
        pid = proc.running_pid()
        assert pid is not None, f"{proc.name} is not running"
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from callback.settings import get_settings
    from infra import stack

    tmp = tmp_path_factory.mktemp("cluster")
    env = pytest.MonkeyPatch()
    for key, value in {
        "CALLBACK_STACK__STATE_DIR": str(tmp / "stack"),
        "CALLBACK_STACK__KAFKA_PORT": str(BASE + 92),
        "CALLBACK_STACK__KAFKA_CONTROLLER_PORT": str(BASE + 93),
        "CALLBACK_STACK__CLICKHOUSE_TCP_PORT": str(BASE),
        "CALLBACK_STACK__CLICKHOUSE_HTTP_PORT": str(BASE + 123),
        "CALLBACK_STACK__CLICKHOUSE_INTERSERVER_PORT": str(BASE + 9),
        "CALLBACK_STACK__ZOOKEEPER_PORT": str(BASE + 181),
        "CALLBACK_STACK__BROKERS": "3",
        "CALLBACK_STACK__CLICKHOUSE_REPLICAS": "2",
    }.items():
        env.setenv(key, value)
    get_settings.cache_clear()
    try:
        stack.up(provision=True)
        lay = stack.existing_layout()
        ch = stack.stack_clickhouse_settings(lay)
        # every process and client of the test: the cluster, as a carrier would configure it
        env.setenv("CALLBACK_KAFKA__BOOTSTRAP_SERVERS", lay.kafka_bootstrap)
        env.setenv("CALLBACK_CLICKHOUSE__PORT", str(ch.port))
        env.setenv("CALLBACK_CLICKHOUSE__HTTP_PORT", str(ch.http_port))
        env.setenv("CALLBACK_CLICKHOUSE__ALT_HOSTS", ch.alt_hosts)
        env.setenv("CALLBACK_CLICKHOUSE__CLUSTER", ch.cluster)
        get_settings.cache_clear()
        yield Cluster(lay, tmp)
    finally:
        try:
            stack.down()
        finally:
            env.undo()
            get_settings.cache_clear()


def _many_payers(data: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's carrier with its callers spread over ``USERS`` users, so that their legs
    spread over the partitions (and the raters) as a carrier's do."""
    [bench] = [u for u in data["users"] if u["user_id"].startswith("bench-")]
    [device] = [d for d in data["devices"] if d["user_id"] == bench["user_id"]]
    anis = device["registered_numbers"]
    data["users"].remove(bench)
    data["devices"].remove(device)
    for i in range(USERS):
        user = {**bench, "user_id": f"{bench['user_id']}-{i}", "name": f"caller {i}"}
        data["users"].append(user)
        data["devices"].append({**device, "device_id": f"{device['device_id']}-{i}",
                                "user_id": user["user_id"], "registered_numbers": anis[i::USERS]})
    return data


def _records(topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    from callback.topic_reader import read_topics

    out: list[tuple[bytes | None, dict[str, Any]]] = []
    read_topics(f"chaos-{topic}", [topic], lambda m: out.append((m.key(), orjson.loads(m.value()))))
    return out


def _coordinator(group: str) -> int:
    """The node id of the broker coordinating ``group``: the one whose loss a member of the group
    must ride out by finding the new coordinator (its offsets, its transactions' offsets)."""
    from confluent_kafka.admin import AdminClient

    from callback.kafka_io import base_config

    admin = AdminClient(base_config())  # held while its future runs: a dropped client never answers
    [future] = admin.describe_consumer_groups([group], request_timeout=30).values()
    node = future.result(timeout=60).coordinator.id
    print(f"group {group} is coordinated by broker {node}", flush=True)
    return int(node)


def _replica(n: int) -> Any:
    from clickhouse_driver import Client

    from callback.settings import get_settings

    return Client(host="127.0.0.1", port=get_settings().stack.clickhouse_tcp_port + n - 1,
                  send_receive_timeout=120)


@pytest.mark.timeout(1500)
def test_pipeline_on_a_cluster_loses_nothing_and_doubles_nothing_while_parts_die(cluster: Cluster):
    from callback.publish import publish_config
    from infra import stack
    from infra.rig import PBX, RunNumbers
    from processors.bench import SUBSCRIBER, TERMINAL, SimulatorProcess, carrier
    from schemas.carrier_config import CarrierConfig

    tmp, lay = cluster.tmp, cluster.layout
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {what}", flush=True)
    numbers = RunNumbers()
    tag = f"ch{numbers.block}"
    server, did, dest = f"pbx-{tag}", numbers.did(1), numbers.dest(1)
    anis = [f"2348{numbers.block}{i:03d}" for i in range(200)]
    sim = SimulatorProcess({"pbx": PBX, "defaults": {**SUBSCRIBER, "destination": dest}})
    config = CarrierConfig.model_validate(_many_payers(carrier(tag, server, sim.host, sim.port, did, anis)))
    publish_config(config, transactional_id=f"chaos-config-{tag}")

    def proc(name: str, args: list[str], **kw: Any) -> CallbackProcess:
        return CallbackProcess(args, tmp / f"{name}.log", **kw).start()

    workers = [proc(f"processors-{i}", ["processors", "--instance", f"w{i}", "--web-port", str(free_port()),
                                        "--data-dir", str(tmp / f"data-w{i}")]) for i in (1, 2)]
    raters = [proc(f"rater-{i}", ["rating", "--instance", f"r{i}"]) for i in (1, 2)]
    sinks = [proc(f"sink-{i}", ["cdr-sink", "--instance", f"s{i}", "--flush-interval-s", "0.3"])
             for i in (1, 2)]
    originator = proc("originator", ["originator", "--journal", str(tmp / "originator.journal"),
                                     "--group", f"orig-{tag}"], env=ami_secret_env(server))
    producer = proc("producer", producer_args(server, sim.host, sim.port))
    everyone = [*workers, *raters, *sinks, originator, producer]
    try:
        for worker in workers:
            worker.wait_for_log("processors ready", timeout=240)
        for rater in raters:
            rater.wait_for_log("ready in", timeout=120)
        originator.wait_for_log("assigned pbx.commands partitions", timeout=120)
        producer.wait_for_log("logged in", timeout=120)

        phase("every process ready; offering callbacks")
        started = time.monotonic()
        sim.offer(RATE_PER_S, SECONDS, did, anis, seed=7)
        victims = {
            "the raters' group coordinator":
                lambda: cluster.kill(lay.kafka_node(_coordinator("callback-rater")).process()),
            "rater 2": raters[1].kill,
            "processors worker 2": workers[1].kill,
            "ClickHouse replica 1": lambda: cluster.kill(lay.clickhouse_replica_process(1)),
        }
        for name, share in sorted(KILLS.items(), key=lambda kv: kv[1]):
            time.sleep(max(0.0, share * SECONDS - (time.monotonic() - started)))
            victims[name]()
            phase(f"killed {name}")
        offered, _t0, _t1 = sim.offered(SECONDS + 120)
        phase(f"{offered} callbacks offered")
        survivors = [workers[0], raters[0], *sinks, originator, producer]
        for p in survivors:
            assert p.alive, f"callback {p.args[0]} exited by itself:\n{p.tail()}"

        # --- every callback ends, and rang each attempt once ---------------------------------------
        def states() -> dict[str, str]:
            last: dict[str, tuple[int, str]] = {}
            for _k, t in _records("callback.sessions"):
                cb = t.get("callback_id")
                if cb and t.get("sequence", 0) >= last.get(cb, (-1, ""))[0]:
                    last[cb] = (t.get("sequence", 0), t["to_state"])
            return {cb: state for cb, (_s, state) in last.items()}

        initiations = {v["callback_id"] for _k, v in _records("callback.requests") if "callback_id" in v}
        assert len(initiations) == offered, (len(initiations), offered)
        def ended() -> bool:
            now = states()
            return all(now.get(cb) in TERMINAL for cb in initiations)

        if not wait_until(ended, 240, interval=5.0):
            now = states()
            stuck = [cb for cb in initiations if now.get(cb) not in TERMINAL]
            example = [t for _k, t in _records("callback.sessions") if t.get("callback_id") in stuck[:2]]
            pytest.fail(f"{len(stuck)} callbacks did not end: {Counter(now.get(cb) for cb in stuck)}; "
                        f"e.g. {example}")

        phase("every callback ended")
        legs: dict[str, dict[str, Any]] = {}
        for _k, leg in _records("callback.legs"):
            legs.setdefault(leg["leg_id"], leg)
        a_attempts = Counter(leg["callback_id"] for leg in legs.values() if leg["leg"] == "a")
        assert sim.originates() == dict(a_attempts), "one Originate per leg-A attempt, none twice"

        # --- every leg charged once --------------------------------------------------------------
        def rated() -> list[tuple[bytes | None, dict[str, Any]]]:
            return _records("cdr.rated")

        assert wait_until(lambda: len(rated()) >= len(legs), 180, interval=3.0), (len(rated()), len(legs))
        cdrs = rated()
        phase("every leg rated")
        charged = Counter(cdr["leg_id"] for _k, cdr in cdrs)
        assert set(charged) == set(legs) and max(charged.values()) == 1, "every leg charged exactly once"
        assert _records("dlq.callback.legs") == []

        # --- balances exact ------------------------------------------------------------------------
        opening = {f"{kind}:{u.user_id}": u.balance
                   for u in config.users for kind in ("user", "callback_user")}
        spent: dict[str, Decimal] = defaultdict(Decimal)
        count: Counter[str] = Counter()
        for _k, cdr in cdrs:
            key = f"{cdr['payer_kind']}:{cdr['payer_id']}"
            spent[key] += Decimal(cdr["price"])
            count[key] += Decimal(cdr["price"]) > 0
        balances = {k.decode(): v for k, v in _records("accounts.balances")}  # latest per payer
        for key, total in spent.items():
            if total:
                assert Decimal(balances[key]["balance"]) == opening[key] - total, key
                assert balances[key]["sequence"] == count[key], key

        # --- every CDR stored once, read from the replica that survived ----------------------------
        revenue = sum(Decimal(cdr["price"]) for _k, cdr in cdrs)
        stack.up(provision=False)  # the dead replica (and broker) back: the survivor fetches its parts
        phase("the killed broker and replica started again")
        survivor = _replica(2)
        survivor.execute("SYSTEM SYNC REPLICA callback.cdr")
        sql = "SELECT count(), uniqExact(leg_id), sum(price) FROM callback.cdr FINAL"
        assert wait_until(lambda: survivor.execute(sql)[0][0] >= len(legs), 120, interval=1.0)
        assert survivor.execute(sql)[0] == (len(legs), len(legs), revenue)
        raw = survivor.execute("SELECT count() FROM callback.cdr")[0][0]
        final = states()
        print(f"{offered} callbacks, {len(legs)} legs, {sum(a_attempts.values())} originates; "
              f"{raw} CDR rows stored for {len(legs)} legs; revenue {revenue}; final states "
              f"{dict(Counter(final[cb] for cb in initiations))}")
        # what the raters rode out (a transactional call wedged by the coordinator's death, above all)
        for rater in raters:
            for line in rater.log_path.read_text(errors="replace").splitlines():
                if "replacing the transactional producer" in line or "has not come round" in line:
                    print(f"{rater.log_path.name}: {line}")
    finally:
        for p in everyone:
            p.stop()
        sim.close()
