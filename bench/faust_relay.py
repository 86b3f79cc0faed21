"""Faust agents against the stage runner: the same records relayed topic to topic by each.

    pip install -e '.[faust]'            # faust-streaming is an optional extra
    python -m bench.faust_relay [-n 100000] [--modes faust-event,faust-take,runner]

Why the stages do not run on Faust is on record in README.md and docs/architecture.md; this
benchmark keeps the throughput half of that decision reproducible. For each mode it
pre-loads `-n` JSON records (~300 bytes, one Kafka record per review, as Faust agents would
move them) into a fresh source topic, starts the relay in a child process and waits until
the destination topic holds all of them:

- `faust-event`: a Faust agent, `async for value in stream: await sink.send(value=value)`;
- `faust-take`: the same agent over `stream.take(2000, within=0.2)`;
- `runner`: `shared.stage.StageRunner` with a handler that emits each record it decodes.

Every mode decodes each record's JSON and produces it again. The rate is taken from the
destination records' own timestamps (first to last), so process start-up and the group
join do not count. Runs against the Kafka of a running local stack (`voc up --no-services`).
Prints each mode's events/s, the ratio of the runner to each Faust mode, the machine's
cores, and a last line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from voc.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
MODES = ("faust-event", "faust-take", "runner")
TAKE = 2000
FILLER = "x" * 220  # brings a record to ~300 bytes


# --------------------------------------------------------------------------- the relays


def run_faust(mode: str, bootstrap: str, src: str, dst: str, partitions: int) -> None:
    """A Faust worker relaying `src` to `dst` (per event, or per `take()` batch)."""
    import faust

    app = faust.App(
        f"voc-bench-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )
    source = app.topic(src, value_serializer="json", partitions=partitions)
    sink = app.topic(dst, value_serializer="json", partitions=partitions)

    if mode == "faust-event":

        @app.agent(source)
        async def relay(stream: Any) -> None:
            async for value in stream:
                await sink.send(value=value)

    else:

        @app.agent(source)
        async def relay_batches(stream: Any) -> None:
            async for values in stream.take(TAKE, within=0.2):
                for value in values:
                    await sink.send(value=value)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def run_runner(bootstrap: str, src: str, dst: str) -> None:
    """The project's stage runner relaying `src` to `dst`."""
    import uvloop

    from shared.db.pool import ConnectionPool
    from shared.events import Event
    from shared.settings import CommonSettings
    from shared.stage import Incoming, Outgoing, StageResult, StageRunner
    from shared.topics import TopicSpec

    class Relayed(Event):
        """A relayed record: what `produce_source` writes."""

        id: int
        text: str

    class Relay:
        """Emits every decoded record unchanged to `dst` (no rows: Postgres is not used)."""

        name = "bench-relay"
        input = TopicSpec(src, Relayed, key="id")

        async def handle(self, batch: Sequence[Incoming]) -> StageResult:
            return StageResult(events=[Outgoing(dst, rec.key, rec.raw) for rec in batch])

    async def main() -> None:
        os.environ.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, VOC_TOPIC_PREFIX="")
        settings = CommonSettings()
        pool = ConnectionPool("postgresql://unused", size=1)  # never opened: no rows
        runner = StageRunner(
            Relay(),
            settings,
            pool,
            max_records=10_000,
            group_id=f"voc-bench-{uuid.uuid4().hex[:8]}",
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, runner.stopping.set)
        await runner.start()
        try:
            await runner.run()
        finally:
            await runner.stop()

    uvloop.run(main())


# --------------------------------------------------------------------------- the harness


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def produce_source(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        batch = []
        for i in range(n):
            value = orjson.dumps({"v": 1, "id": i, "text": FILLER})
            batch.append(await producer.send(topic, value, key=str(i).encode()))
            if len(batch) >= 5000:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def wait_relayed(
    bootstrap: str,
    topic: str,
    partitions: int,
    n: int,
    timeout_s: float,
    child: subprocess.Popen[bytes],
) -> float:
    """Wait until `topic` holds `n` records; the rate from their first to last timestamp."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # The partitions are known (created here): a consumer's cached metadata may not list
        # a topic created just before it started, and is not refreshed for unread topics.
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        deadline = time.monotonic() + timeout_s
        while True:
            ends = await consumer.end_offsets(tps)
            total = sum(ends.values())
            if total >= n:
                break
            if child.poll() is not None:
                raise RuntimeError(f"relay exited with {child.returncode} at {total}/{n}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {total}/{n} relayed after {timeout_s:.0f}s")
            await asyncio.sleep(0.5)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        first, last, seen = float("inf"), 0.0, 0
        while seen < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {seen}/{n} relayed records in {timeout_s:.0f}s")
            polled = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for recs in polled.values():
                for r in recs:
                    first, last = min(first, r.timestamp), max(last, r.timestamp)
                    seen += 1
        return n / max((last - first) / 1000, 1e-3)
    finally:
        await consumer.stop()


def stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s (by PID: the child is ours)."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def measure(mode: str, bootstrap: str, n: int, partitions: int, timeout_s: float) -> float:
    run = uuid.uuid4().hex[:8]
    src, dst = f"bench.relay.{mode}.{run}.src", f"bench.relay.{mode}.{run}.dst"
    await create_topics(bootstrap, [src, dst], partitions)
    await produce_source(bootstrap, src, n)
    argv = [sys.executable, "-m", "bench.faust_relay", "--child", mode, "--src", src]
    argv += ["--dst", dst, "--bootstrap", bootstrap, "--partitions", str(partitions)]
    # Faust writes its `<app id>-data` directory into the working directory even with the
    # memory store: the child runs in a temporary one (removed after) with ROOT importable.
    with tempfile.TemporaryDirectory(prefix="voc-bench-faust-") as cwd:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
        try:
            return await wait_relayed(bootstrap, dst, partitions, n, timeout_s, child)
        finally:
            stop(child)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=100_000, help="records per mode")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mode")
    p.add_argument("--profile", default=os.environ.get("VOC_PROFILE", "dev"), help="local stack")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--dst", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        if args.child == "runner":
            run_runner(args.bootstrap, args.src, args.dst)
        else:
            run_faust(args.child, args.bootstrap, args.src, args.dst, args.partitions)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m.startswith("faust") for m in modes):
        try:
            import faust  # noqa: F401
        except ImportError:
            print("faust-streaming is not installed: pip install -e '.[faust]'", file=sys.stderr)
            return 2
    bootstrap = Stack(profile=args.profile).env()["KAFKA_BOOTSTRAP_SERVERS"]
    cores = os.cpu_count() or 0
    print(f"relaying {args.n:,} records per mode over {args.partitions} partitions, {cores} cores")
    rates: dict[str, float] = {}
    for mode in modes:
        rates[mode] = asyncio.run(measure(mode, bootstrap, args.n, args.partitions, args.timeout))
        print(f"  {mode:<12} {rates[mode]:>10,.0f} events/s")
    ratios = {
        f"runner_vs_{m.replace('-', '_')}": round(rates["runner"] / rates[m], 2)
        for m in modes
        if m != "runner" and "runner" in rates
    }
    for name, ratio in ratios.items():
        print(f"  {name}: {ratio}x")
    per_s = {m: round(r) for m, r in rates.items()}
    print(
        "RESULT " + json.dumps({"records": args.n, "cores": cores, "events_per_s": per_s, **ratios})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
