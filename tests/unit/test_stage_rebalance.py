"""The stage runner across rebalances, against an in-memory consumer group member.

`kafka_double.FakeConsumer` keeps aiokafka's rebalance semantics (see its docstring) but
fetches instantly, so what the runner does in each window is deterministic. Every test
checks the delivery contract: every record is handled, the committed offset of every
partition reaches its end, and no commit ever passes a record that was not handled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from kafka_double import FakeConsumer, FakeProducer

from shared.events import Review, ReviewsIngested
from shared.settings import CommonSettings
from shared.stage import Incoming, StageResult, StageRunner
from shared.topics import REVIEWS_INGESTED, TopicSpec, retry_topic

TOPIC = "voc.reviews.ingested"


class Recorder:
    """A handler that notes which records it handled, after `delay_s`."""

    name = "rebalance-test"
    input: TopicSpec = REVIEWS_INGESTED

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.handled: list[tuple[int, int]] = []

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        await asyncio.sleep(self.delay_s)
        self.handled.extend((r.partition, r.offset) for r in batch)
        return StageResult()


def values(n: int, partition: int) -> list[bytes]:
    return [
        ReviewsIngested(job_id="j", reviews=[Review(id=f"p{partition}-{i}", text="t")]).to_bytes()
        for i in range(n)
    ]


async def works(component: str) -> bool:
    return True


async def wire(handler: Recorder, consumer: FakeConsumer, **kw: Any) -> StageRunner:
    runner = StageRunner(
        handler,
        CommonSettings(),
        None,  # type: ignore[arg-type]  # nothing here writes rows
        probe=works,
        consumer=consumer,
        producer=FakeProducer(),
        **kw,
    )
    await runner.start()
    return runner


async def run_until(runner: StageRunner, done: object, timeout: float = 5.0) -> None:
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():  # type: ignore[operator]
                await asyncio.sleep(0.01)
    finally:
        runner.stopping.set()
        await asyncio.wait_for(task, 5)


def assert_contract(handler: Recorder, consumer: FakeConsumer) -> None:
    handled = set(handler.handled)
    for p, log in consumer.log.items():
        tp = consumer.tp(p)
        assert consumer.committed.get(tp) == len(log), f"partition {p} not committed to its end"
        for c in consumer.commits:
            if tp in c.offsets:
                missing = [o for o in range(c.offsets[tp]) if (p, o) not in handled]
                assert not missing, f"commit {c.offsets[tp]} on {p} passes unhandled {missing}"


async def test_records_fetched_for_partitions_assigned_while_busy_are_not_dropped() -> None:
    """A rebalance while every slot is busy hands out fresh, unpaused partitions."""
    consumer = FakeConsumer(TOPIC, {0: values(6, 0), 1: values(6, 1)}, assigned={0})

    async def rebalance_then_more_records() -> None:
        await consumer.rebalance([0, 1])
        await asyncio.sleep(0.2)
        for p in (0, 1):  # later records: their commits must not pass over earlier ones
            consumer.log[p].extend(values(2, p))

    consumer.on_first_pause = rebalance_then_more_records
    handler = Recorder()
    runner = await wire(handler, consumer, max_records=2, max_inflight=1)

    def done() -> bool:
        return all(consumer.committed.get(consumer.tp(p)) == 8 for p in (0, 1))

    await run_until(runner, done)
    assert_contract(handler, consumer)


class Hangs(Recorder):
    """Hangs forever on the first batch that holds a record of `partition`."""

    def __init__(self, partition: int) -> None:
        super().__init__(delay_s=0.01)
        self.partition = partition
        self.hung = asyncio.Event()
        self.cancelled = 0

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        if not self.hung.is_set() and any(r.partition == self.partition for r in batch):
            self.hung.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().handle(batch)


async def test_a_hung_batch_does_not_hold_up_the_rebalance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager rebalancing stops every member until each has revoked: a revoke that waits for a
    batch stuck in a slow LLM call stalls the whole group. The batch is abandoned after a
    grace period instead; its records were not committed, so the next owner replays them."""
    monkeypatch.setenv("VOC_REBALANCE_GRACE_S", "0.2")
    consumer = FakeConsumer(TOPIC, {0: values(4, 0), 1: values(4, 1)}, assigned={0, 1})
    handler = Hangs(partition=1)
    runner = await wire(handler, consumer, max_records=2, max_inflight=4)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(handler.hung.wait(), 5)
        # p1 goes to another member; p0 stays here.
        await asyncio.wait_for(consumer.rebalance([0]), 5)
        async with asyncio.timeout(5):
            while consumer.committed.get(consumer.tp(0)) != 4:
                await asyncio.sleep(0.01)
    finally:
        runner.stopping.set()
        await asyncio.wait_for(task, 5)
    assert handler.cancelled == 1
    assert consumer.tp(1) not in consumer.committed or consumer.committed[consumer.tp(1)] == 0
    consumer.log.pop(1)  # owned by the other member now
    assert_contract(handler, consumer)


async def test_a_retry_tier_waiting_for_its_due_time_does_not_hold_up_the_rebalance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retry tier's batch sleeps until its records are due (up to the last tier's delay);
    a rebalance meanwhile neither waits for that nor commits the records."""
    monkeypatch.setenv("VOC_REBALANCE_GRACE_S", "0.2")
    due = str(int((time.time() + 3600) * 1000)).encode()
    handler = Recorder()
    topic = retry_topic(handler.name, 1).full_name("voc.")
    log = {0: [(v, [("voc-not-before", due)]) for v in values(2, 0)]}
    consumer = FakeConsumer(topic, log, assigned={0})
    runner = await wire(handler, consumer, max_records=2, max_inflight=1, retry_tier=1)
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(5):
            while not runner.batches:
                await asyncio.sleep(0.01)
        polls = consumer.getmany_calls
        await asyncio.sleep(1.5)
        # Waiting for the due time, the tier still polls (max.poll.interval.ms).
        assert consumer.getmany_calls > polls
        await asyncio.wait_for(consumer.rebalance([0]), 5)
    finally:
        runner.stopping.set()
        await asyncio.wait_for(task, 5)
    assert handler.handled == []
    assert consumer.committed == {}
