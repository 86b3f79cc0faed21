"""`voc replay offsets` plans the same new offsets as Kafka's own kafka-consumer-groups."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from voc import replay_offsets as ro

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LIBS = ROOT / "tools" / "kafka" / "libs"


def kafka_tool_plan(bootstrap: str, group: str, topic: str, *args: str) -> dict[int, int]:
    """NEW-OFFSET per partition from ConsumerGroupCommand --reset-offsets --dry-run."""
    out = subprocess.run(
        [
            "java",
            "-cp",
            f"{LIBS}/*",
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            bootstrap,
            "--group",
            group,
            "--topic",
            topic,
            "--reset-offsets",
            *args,
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    plan = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[0] == group and cols[1] == topic.split(":")[0]:
            plan[int(cols[2])] = int(cols[3])
    return plan


async def _prepare(bootstrap: str) -> tuple[str, str, int]:
    """A 3-partition topic with 30 records in two time-separated halves; group at 4/offset."""
    topic = f"test-replay-{uuid.uuid4().hex[:8]}"
    group = f"test-replay-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for i in range(15):
        await producer.send_and_wait(topic, b"early", partition=i % 3)
    await asyncio.sleep(1.2)
    middle_ms = int(time.time() * 1000)
    await asyncio.sleep(0.3)
    for i in range(15):
        await producer.send_and_wait(topic, b"late", partition=i % 3)
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(3)])
    # partition 0 at 4, partition 1 at 9, partition 2 never committed
    await consumer.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 9})
    await consumer.stop()
    return topic, group, middle_ms


async def _ours(
    bootstrap: str,
    group: str,
    topic: str,
    method: str,
    value: object,
    at_ms: int | None = None,
    only: set[int] | None = None,
) -> dict[int, int]:
    parts = await ro.read_offsets(bootstrap, group, topic, at_ms, only)
    return {r.partition: r.new for r in ro.plan(method, value, parts)}


async def test_new_offsets_match_kafka_consumer_groups(stack: dict[str, str]) -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group, middle_ms = await _prepare(bootstrap)
    iso = datetime.fromtimestamp(middle_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    at_ms = ro.parse_datetime_ms(iso)

    theirs = kafka_tool_plan(bootstrap, group, topic, "--to-datetime", iso)
    assert await _ours(bootstrap, group, topic, "datetime", iso, at_ms) == theirs
    assert theirs == {0: 5, 1: 5, 2: 5}

    assert await _ours(bootstrap, group, topic, "earliest", None) == kafka_tool_plan(
        bootstrap, group, topic, "--to-earliest"
    )
    assert await _ours(bootstrap, group, topic, "offset", 7) == kafka_tool_plan(
        bootstrap, group, topic, "--to-offset", "7"
    )
    # shift-by on the two committed partitions (Kafka refuses partitions without an offset)
    shifted = await _ours(bootstrap, group, topic, "shift", -2, only={0, 1})
    theirs_shift = kafka_tool_plan(bootstrap, f"{group}", f"{topic}:0,1", "--shift-by", "-2")
    assert shifted == theirs_shift == {0: 2, 1: 7}
    big = await _ours(bootstrap, group, topic, "shift", 100, only={0, 1})
    assert big == kafka_tool_plan(bootstrap, group, f"{topic}:0,1", "--shift-by", "100")


async def test_dry_run_changes_nothing_and_execute_applies(stack: dict[str, str]) -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group, _ = await _prepare(bootstrap)
    before = await ro.read_offsets(bootstrap, group, topic, None, None)
    rows = ro.plan("earliest", None, before)  # planning alone is the dry run
    after = await ro.read_offsets(bootstrap, group, topic, None, None)
    assert [p.committed for p in after] == [p.committed for p in before] == [4, 9, None]
    assert await ro.active_members(bootstrap, group) == 0
    await ro.commit_offsets(bootstrap, group, topic, rows)
    applied = await ro.read_offsets(bootstrap, group, topic, None, None)
    assert [p.committed for p in applied] == [0, 0, 0]
