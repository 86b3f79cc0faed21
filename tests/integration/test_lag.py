"""`voc lag --json` and the lag exporter's /metrics agree exactly with Kafka's own tool.

A group with known lag on a fresh random topic: N records produced per partition, the group
(still a live member) commits M of them. Then three readers describe it at a quiet moment:
Kafka's `ConsumerGroupCommand --describe` (kafka-consumer-groups.sh, from the kafka-tools jar
fetched into tools/kafka/libs by the stack), `voc lag --json`, and a lag exporter process
started on a private port. Offsets, log-end offsets, lags and members must be identical, and
lag seconds must be the age of the record at the committed offset.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voc import procs
from voc.kafka_dist import LIBS, LOG_CONFIG

ROOT = Path(__file__).resolve().parents[2]
PRODUCED = {0: 10, 1: 7, 2: 5}  # records per partition
COMMITTED = {0: 4, 1: 7, 2: 0}  # committed offsets: lag 6, 0, 5


@dataclass
class KnownLag:
    bootstrap: str
    topic: str
    group: str
    timestamps: dict[tuple[int, int], float]  # (partition, offset) -> record time, unix s


@pytest.fixture
async def known_lag(stack: dict[str, str]) -> AsyncIterator[KnownLag]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.structs import TopicPartition

    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    suffix = uuid.uuid4().hex[:10]
    topic, group = f"test.lag.{suffix}", f"test-lag-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    stamps: dict[tuple[int, int], float] = {}
    try:
        for partition, n in PRODUCED.items():
            for i in range(n):
                meta = await producer.send_and_wait(
                    topic, json.dumps({"reviews": [i]}).encode(), partition=partition
                )
                stamps[(partition, meta.offset)] = meta.timestamp / 1000.0
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="test-lag-client",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while len(consumer.assignment()) < 3 and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
        assert len(consumer.assignment()) == 3, "consumer never got its partitions"
        await consumer.commit(
            {TopicPartition(topic, p): off for p, off in COMMITTED.items() if off > 0}
        )
        # Partition 2 gets an explicit commit at 0, so it is "committed with lag 5", not "-".
        await consumer.commit({TopicPartition(topic, 2): 0})
        consumer.pause(*consumer.assignment())  # quiet: a live member that reads no further
        yield KnownLag(bootstrap, topic, group, stamps)
    finally:
        await consumer.stop()
        # Leave nothing behind: a group with offsets on a deleted topic lingers for days.
        from aiokafka.protocol.admin import DeleteGroupsRequest

        coordinator = await admin.find_coordinator(group)
        await admin._send_request(DeleteGroupsRequest([group]), coordinator)
        await admin.delete_topics([topic])
        await admin.close()


def _kafka_tool(bootstrap: str, group: str) -> list[dict[str, str]]:
    java = shutil.which("java")
    if java is None or not any(LIBS.glob("kafka-tools-*.jar")):
        pytest.skip("java or tools/kafka/libs/kafka-tools-*.jar missing")
    result = subprocess.run(
        [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-cp",
            f"{LIBS}/*",
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["GROUP", "TOPIC"])
    header = lines[start].split()
    return [dict(zip(header, ln.split(), strict=True)) for ln in lines[start + 1 :]]


def _voc_lag(bootstrap: str, group: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "voc", "lag", "--json", "--bootstrap-server", bootstrap,
         "--group", group],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exporter_metrics(bootstrap: str, group: str, tmp: Path) -> dict[str, dict[str, float]]:
    """Start a lag exporter for `group`, wait for its first poll, return its lag metrics."""
    port = _free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "VOC_METRICS_PORT": str(port),
        "VOC_LAG_INTERVAL_S": "0.5",
        "VOC_LAG_GROUP_ALLOW": group,
        "VOC_LAG_PUBLISH_REDIS": "false",
        "VOC_KAFKA_CLUSTER_NAME": "test",
    }
    pid = procs.spawn(
        [sys.executable, "-m", "services.lag_exporter"], env=env, log_path=tmp / "exp.log", cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                if "kafka_consumergroup_group_lag{" in text:
                    break
            except OSError:
                pass
            assert procs.is_alive(pid), procs.tail(tmp / "exp.log")
            assert time.monotonic() < deadline, procs.tail(tmp / "exp.log")
            time.sleep(0.2)
    finally:
        procs.terminate(pid, timeout=10)
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("group") == group and "partition" in s.labels:
                out.setdefault(s.name, {})[s.labels["partition"]] = s.value
                out.setdefault(s.name + "/member", {})[s.labels["partition"]] = s.labels.get(
                    "consumer_id", ""
                )  # type: ignore[assignment]
            elif s.labels.get("group") == group:
                out.setdefault(s.name, {})[""] = s.value
    return out


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


async def test_voc_lag_and_exporter_equal_kafka_consumer_groups(
    known_lag: KnownLag, tmp_path: Path
) -> None:
    k = known_lag
    # The readers block, so they run in threads: the event loop must keep the test group's
    # consumer heartbeating, or it would leave the group halfway through.
    t0 = time.time()
    ours = await asyncio.to_thread(_voc_lag, k.bootstrap, k.group)
    t1 = time.time()
    kafka = await asyncio.to_thread(_kafka_tool, k.bootstrap, k.group)
    metrics = await asyncio.to_thread(_exporter_metrics, k.bootstrap, k.group, tmp_path)

    kafka_rows = {
        int(r["PARTITION"]): (
            r["CURRENT-OFFSET"],
            r["LOG-END-OFFSET"],
            r["LAG"],
            r["CONSUMER-ID"],
            r["HOST"],
            r["CLIENT-ID"],
        )
        for r in kafka
        if r["TOPIC"] == k.topic
    }
    our_rows = {
        int(str(r["partition"])): (
            _dash(r["current_offset"]),
            _dash(r["log_end_offset"]),
            _dash(r["lag"]),
            _dash(r["consumer_id"]),
            _dash(r["host"]),
            _dash(r["client_id"]),
        )
        for r in ours
    }
    assert {r["group"] for r in ours} == {k.group} and {r["topic"] for r in ours} == {k.topic}
    assert our_rows == kafka_rows
    # And they are what the test set up.
    assert {p: int(v[2]) for p, v in kafka_rows.items()} == {
        p: PRODUCED[p] - COMMITTED[p] for p in PRODUCED
    }

    # Lag seconds: the age of the record at the committed offset when voc lag read it.
    for r in ours:
        p, committed = int(str(r["partition"])), int(str(r["current_offset"]))
        if committed >= PRODUCED[p]:
            assert r["lag_seconds"] == 0.0
            continue
        ts = k.timestamps[(p, committed)]
        assert t0 - ts - 0.01 <= float(str(r["lag_seconds"])) <= t1 - ts + 0.01

    # The exporter, in kafka-lag-exporter's names, says the same.
    def by_partition(name: str) -> dict[int, str]:
        return {int(p): str(int(v)) for p, v in metrics[name].items()}

    assert by_partition("kafka_consumergroup_group_offset") == {
        p: v[0] for p, v in kafka_rows.items()
    }
    assert by_partition("kafka_consumergroup_group_lag") == {p: v[2] for p, v in kafka_rows.items()}
    assert {int(p): v for p, v in metrics["kafka_consumergroup_group_lag/member"].items()} == {
        p: v[3] for p, v in kafka_rows.items()
    }
    lags = [int(v[2]) for v in kafka_rows.values()]
    assert metrics["kafka_consumergroup_group_sum_lag"][""] == sum(lags)
    assert metrics["kafka_consumergroup_group_max_lag"][""] == max(lags)
    assert metrics["vocstream_consumergroup_members"][""] == 1
    secs = metrics["kafka_consumergroup_group_lag_seconds"]
    assert secs["1"] == 0.0
    assert secs["0"] >= t0 - k.timestamps[(0, COMMITTED[0])] - 0.01
    assert secs["2"] >= t0 - k.timestamps[(2, 0)] - 0.01
