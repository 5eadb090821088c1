"""The reference of ``callback bench processors``: a bare Faust agent on the same broker.

A minimal ``faust.App`` configured like ``callback processors`` where it matters for throughput
(``at_least_once``, the same table store, acks=all, commit every second, its topics declared by us, not
by Faust), whose one agent does, per event, one table get, one table update (a changelog record)
and one send: the least a stateful Faust stream can do per input. The benchmark creates the
topics (input and output with 6 partitions, the table's compacted changelog with 6), fills the
input before this process starts, and runs it as::

    python -m processors.bench_bare --app-id A --input T --output T2 --events N \
        --result FILE --web-port P --data-dir DIR

(the changelog is ``<A>-counts-changelog``, as Faust names it).

The agent writes ``{"events": N, "first": t0, "last": t1, "cpu_s": c}`` (epoch seconds taken in
this process, and the CPU seconds it used in between) to ``FILE`` once it has handled the N-th
event, and ``FILE.first`` when it handles the first; the benchmark then stops it (SIGTERM).
Start-up (group join, table recovery) is excluded, as in the processors' figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

PARTITIONS = 6
TABLE = "counts"


def changelog_topic(app_id: str) -> str:
    """The name Faust gives the table's changelog (we create it ourselves)."""
    return f"{app_id}-{TABLE}-changelog"


def build_app(args: argparse.Namespace) -> Any:
    import faust

    from callback.settings import get_settings
    from processors.app import TABLE_STORE, broker_credentials, broker_urls

    kafka = get_settings().kafka
    app = faust.App(
        args.app_id,
        broker=broker_urls(kafka),
        broker_credentials=broker_credentials(kafka),
        processing_guarantee="at_least_once",
        topic_allow_declare=False,
        topic_disable_leader=True,
        store=TABLE_STORE,
        datadir=args.data_dir,
        web_port=args.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        autodiscover=False,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(args.input, **raw)
    out = app.topic(args.output, **raw)
    table = app.Table(
        TABLE,
        partitions=PARTITIONS,
        changelog_topic=app.topic(
            changelog_topic(args.app_id),
            partitions=PARTITIONS,
            compacting=True,
            deleting=False,
            key_serializer="raw",
            value_serializer="json",
        ),
    )
    table.key_serializer, table.value_serializer = "raw", "json"
    result = Path(args.result)
    seen = {"n": 0, "first": 0.0, "cpu": 0.0}

    async def bare(stream: Any) -> None:
        async for event in stream.events():
            if seen["n"] == 0:
                seen["first"], seen["cpu"] = time.time(), time.process_time()
                result.with_suffix(".first").write_text(str(seen["first"]))
            key = event.key
            table[key] = (table.get(key) or 0) + 1
            await out.send(key=key, value=event.value)
            seen["n"] += 1
            if seen["n"] == args.events:
                tmp = result.with_suffix(".tmp")
                last, cpu = time.time(), time.process_time() - seen["cpu"]
                tmp.write_text(
                    json.dumps({"events": seen["n"], "first": seen["first"], "last": last, "cpu_s": cpu})
                )
                os.replace(tmp, result)

    app.agent(source, name="bare")(bare)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--web-port", type=int, required=True)
    parser.add_argument("--data-dir", required=True, help="Faust's data folder (nothing is kept there)")
    args = parser.parse_args(argv)

    import faust

    app = build_app(args)
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
