"""The overflow lane's deferral rule and the fair LLM slots (shared.stage.fair)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.stage.contract import Incoming, StageResult
from shared.stage.fair import FairSlots, JobShares, ShareJobs
from shared.topics import TopicSpec

LANE = "voc.insight.overflow"
INPUT = TopicSpec("reviews.translated", None, key="job")


@dataclass
class Ev:
    job_id: str
    reviews: list[int]


def rec(job: str, reviews: int, offset: int = 0) -> Incoming:
    return Incoming(Ev(job, list(range(reviews))), "t", 0, offset, b"raw", job.encode())


@dataclass
class Handler:
    """Records what it was given; waits on `gate` while handling a batch of job "a"."""

    name: str = "insight"
    input: TopicSpec = INPUT
    seen: list[list[str]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        self.seen.append([r.event.job_id for r in batch])
        if self.gate is not None and batch[0].event.job_id == "a":
            await self.gate.wait()
        return StageResult(reviews_out=sum(len(r.event.reviews) for r in batch))


async def test_records_beyond_a_jobs_share_go_to_the_overflow_lane_as_they_are() -> None:
    inner = Handler()
    wrapped = ShareJobs(inner, JobShares(per_job=100), LANE)
    batch = [rec("a", 50, 0), rec("a", 50, 1), rec("a", 50, 2), rec("b", 50, 3)]
    result = await wrapped.handle(batch)
    assert inner.seen == [["a", "a", "b"]]
    assert [(e.topic, e.key, e.value) for e in result.events] == [(LANE, b"a", b"raw")]
    assert result.reviews_out == 150


async def test_a_job_holding_its_share_in_another_batch_is_deferred_until_it_is_done() -> None:
    gate = asyncio.Event()
    inner = Handler(gate=gate)
    shares = JobShares(per_job=100)
    wrapped = ShareJobs(inner, shares, LANE)
    first = asyncio.create_task(wrapped.handle([rec("a", 100)]))
    await asyncio.sleep(0)
    second = await wrapped.handle([rec("a", 10), rec("b", 10)])
    assert [e.key for e in second.events] == [b"a"]  # a's share is taken by the first batch
    gate.set()
    await first
    assert shares.held == {}
    third = await wrapped.handle([rec("a", 10)])
    assert third.events == []


async def test_the_overflow_lane_counts_but_never_defers() -> None:
    gate = asyncio.Event()
    shares = JobShares(per_job=100)
    lane = ShareJobs(Handler(gate=gate), shares, None)
    main = ShareJobs(Handler(), shares, LANE)
    busy = asyncio.create_task(lane.handle([rec("a", 80), rec("a", 80)]))
    await asyncio.sleep(0)
    assert shares.held["a"] == 160  # over its share, and still handled on the lane
    deferred = await main.handle([rec("a", 1)])
    assert [e.key for e in deferred.events] == [b"a"]
    gate.set()
    await busy


async def test_a_record_bigger_than_the_share_is_handled_when_its_job_holds_nothing() -> None:
    inner = Handler()
    result = await ShareJobs(inner, JobShares(per_job=10), LANE).handle([rec("a", 500)])
    assert inner.seen == [["a"]] and result.events == []


async def test_a_failing_handler_releases_its_jobs_share() -> None:
    class Boom(Handler):
        async def handle(self, batch: Sequence[Incoming]) -> StageResult:
            raise RuntimeError("boom")

    shares = JobShares(per_job=10)
    with pytest.raises(RuntimeError):
        await ShareJobs(Boom(), shares, LANE).handle([rec("a", 5)])
    assert shares.held == {}


def caller(slots: FairSlots, got: list[str], release: asyncio.Event) -> Any:
    """A call of `job` through `slots` noting its turn in `got`; job "holder" keeps its
    slot until `release` is set."""

    async def call(job: str) -> None:
        async with slots.slot(job):
            got.append(job)
            if job == "holder":
                await release.wait()

    return call


async def test_fair_slots_serve_the_job_with_fewest_calls_waiting_first() -> None:
    slots = FairSlots(1)
    order: list[str] = []
    release = asyncio.Event()
    call = caller(slots, order, release)

    holder = asyncio.create_task(call("holder"))
    await asyncio.sleep(0)
    # A big job queues 5 calls before a small job queues 2.
    waiters = [asyncio.create_task(call("big")) for _ in range(5)]
    waiters += [asyncio.create_task(call("small")) for _ in range(2)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *waiters)
    assert order == ["holder", "small", "small", "big", "big", "big", "big", "big"]
    assert slots.free == 1


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    slots = FairSlots(1)
    release = asyncio.Event()
    got: list[str] = []
    call = caller(slots, got, release)

    holder = asyncio.create_task(call("holder"))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(call("a"))
    later = asyncio.create_task(call("b"))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, later)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert got == ["holder", "b"] and slots.free == 1


async def test_a_jobs_first_reviews_are_never_deferred() -> None:
    inner = Handler()
    wrapped = ShareJobs(inner, JobShares(per_job=100, free_reviews=1000), LANE)
    small = await wrapped.handle([rec("b", 50, i) for i in range(20)])  # 1,000 at once
    assert small.events == [] and inner.seen == [["b"] * 20]
    more = await wrapped.handle([rec("b", 50), rec("b", 50), rec("b", 50)])
    assert len(more.events) == 1  # past its first 1,000: the share applies (100 at once)
