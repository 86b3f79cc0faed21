"""Replicas of one stage joining and leaving its group on the real broker: nothing lost.

Two `StageRunner`s in this process form one consumer group on a topic of their own (four
partitions, a prefix of this test). The first runs with one batch in flight and a slow
handler, so it is busy (its partitions paused) most of the time; the second joins while it
is busy and leaves again, three times, each join and leave a real rebalance by the broker's
group coordinator. Afterwards the group has committed every partition to its end and each
record was handled by one of the two (some twice: a batch abandoned by a rebalance is
replayed by the next owner).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from ingest_kit import bootstrap, producer

from shared.events import Review, ReviewsIngested
from shared.settings import CommonSettings
from shared.stage import Incoming, StageResult, StageRunner
from shared.topics import REVIEWS_INGESTED, TopicSpec

pytestmark = pytest.mark.integration

PARTITIONS = 4
# Enough work that the busy member still has batches in flight when the third replica
# joins: the joiner (~40 records/s) and the busy member (~17/s) must not run out of it.
PER_PARTITION = 250


class Slow:
    """Notes every record it handles, `delay_s` per batch."""

    name = "rebalance-live"
    input: TopicSpec = REVIEWS_INGESTED

    def __init__(self, handled: set[tuple[int, int]], delay_s: float) -> None:
        self.handled = handled
        self.delay_s = delay_s

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        await asyncio.sleep(self.delay_s)
        self.handled.update((r.partition, r.offset) for r in batch)
        return StageResult()


async def _committed(group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic}


async def test_replicas_joining_and_leaving_a_busy_member_lose_nothing(
    stack: dict[str, str],
) -> None:
    prefix = f"rt{uuid.uuid4().hex[:8]}."
    topic = REVIEWS_INGESTED.full_name(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    async with producer() as p:
        for part in range(PARTITIONS):
            for i in range(PER_PARTITION):
                event = ReviewsIngested(job_id="j", reviews=[Review(id=f"{part}-{i}", text="t")])
                await p.send(topic, event.to_bytes(), key=b"k", partition=part)
        await p.flush()

    handled: set[tuple[int, int]] = set()
    settings = CommonSettings()
    settings.kafka.topic_prefix = prefix
    settings.runtime.rebalance_grace_s = 1.0
    busy = StageRunner(Slow(handled, 0.3), settings, None, max_records=5)  # type: ignore[arg-type]
    await busy.start()
    busy_task = asyncio.create_task(busy.run())
    group = busy.group_id
    try:
        for _ in range(3):
            async with asyncio.timeout(60):
                while not busy.batches:
                    await asyncio.sleep(0.01)
            joiner = StageRunner(
                Slow(handled, 0.25),
                settings,
                None,  # type: ignore[arg-type]
                max_records=5,
                max_inflight=2,
            )
            await joiner.start()
            joiner_task = asyncio.create_task(joiner.run())
            await asyncio.sleep(4)  # join, get partitions, work a little
            joiner.stopping.set()
            await joiner_task
            await joiner.stop()

        async def all_committed() -> bool:
            c = await _committed(group, topic)
            return all(c.get(part) == PER_PARTITION for part in range(PARTITIONS))

        async with asyncio.timeout(180):
            while not await all_committed():
                await asyncio.sleep(0.5)
    finally:
        busy.stopping.set()
        await busy_task
        await busy.stop()
    expected = {(part, i) for part in range(PARTITIONS) for i in range(PER_PARTITION)}
    assert expected - handled == set()
