"""One job's backlog must not hold back another job: an overflow lane and fair slots.

A stage's input partitions are FIFO, and a big job's records come first in every one of
them: a small job submitted a minute later would wait behind the big job's whole backlog
(measured: a 1,000-review job beside a 50,000-review one still had 150 insights after
ten minutes, against 35 s alone). Two pieces fix that in the LLM stages:

- **The overflow lane.** `ShareJobs` wraps the handler of the input topic's runner. It
  counts, per job, the reviews this process's handlers hold now (`JobShares`); once a job
  has had its first `free_reviews` handled here, a record of it whose job already holds
  its share (`per_job` reviews) is not handled but produced, as it is (key, bytes,
  headers), to the stage's overflow topic, and its offset committed like any handled
  record's. A small job therefore never meets the overflow lane (where it would wait
  behind the big job's backlog, FIFO). So the input partitions drain at Kafka speed past a big
  job's excess, and the next job's records are reached at once. A second runner of the
  same process consumes the overflow topic (its own consumer group, `max_inflight`
  batches) with the same handler and never defers again: the big job proceeds there, at
  the pace of its share. A record alone bigger than the share is handled anyway when its
  job holds nothing, so every job always progresses on the input topic too.
- **Fair slots.** `FairSlots` replaces the plain semaphore in front of the LLM: when all
  slots are taken the next free one goes to the job with the fewest calls waiting, not
  to whichever call queued first, so a job with hundreds of calls waiting does not queue
  a small job's calls out (and the big job has all slots again once the small one is
  through). The shared limiter then splits the quota between the jobs
  (`shared.llm.ratelimit`).

Deferral is at-least-once like everything else: the overflow record is produced before the
input offset is committed, and a crash between the two produces it again, which the
deterministic ids make harmless. Counts are per process; with several replicas each
defers on its own share.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import Counter as PromCounter

from shared.stage.contract import Incoming, Outgoing, StageHandler, StageResult

DEFERRED = PromCounter(
    "vocstream_stage_deferred_records_total",
    "Records moved to the stage's overflow lane: their job held its share of the stage",
    ["stage"],
)


def job_of(rec: Incoming) -> str | None:
    """The record's job id, if its event has one."""
    job_id = getattr(rec.event, "job_id", None)
    return job_id if isinstance(job_id, str) else None


def reviews_of(rec: Incoming) -> int:
    """How many reviews the record carries (at least 1: a record is work too)."""
    reviews = getattr(rec.event, "reviews", None)
    return max(1, len(reviews)) if isinstance(reviews, Sequence) else 1


class JobShares:
    """The reviews each job has in this process's handlers now, over every lane, and how
    many each job has had admitted on the input topic (its first `free_reviews` always are:
    a small job never goes to the overflow lane, where a big one's backlog waits)."""

    def __init__(self, per_job: int, free_reviews: int = 0, remembered: int = 10_000) -> None:
        self.per_job = per_job
        self.free_reviews = free_reviews
        self.held: Counter[str] = Counter()
        self._admitted: OrderedDict[str, int] = OrderedDict()
        self._remembered = remembered

    def admits(self, job_id: str, reviews: int, planned: int = 0) -> bool:
        """Whether `reviews` more of `job_id` may be handled on the input topic now
        (`planned`: already admitted from the same batch): within the job's first
        `free_reviews`, or within its share of what is held, or when it holds nothing."""
        if self._admitted.get(job_id, 0) + planned + reviews <= self.free_reviews:
            return True
        held = self.held[job_id] + planned
        return held == 0 or held + reviews <= self.per_job

    def admitted(self, counts: Mapping[str, int]) -> None:
        """Note reviews admitted on the input topic (the oldest jobs are forgotten)."""
        for job_id, n in counts.items():
            self._admitted[job_id] = self._admitted.get(job_id, 0) + n
            self._admitted.move_to_end(job_id)
        while len(self._admitted) > self._remembered:
            self._admitted.popitem(last=False)

    @contextlib.contextmanager
    def holding(self, counts: Mapping[str, int]) -> Iterator[None]:
        """Count `counts` as held for the duration of the block."""
        self.held.update(counts)
        try:
            yield
        finally:
            self.held.subtract(counts)
            for job_id in counts:
                if self.held[job_id] <= 0:
                    del self.held[job_id]


class ShareJobs:
    """A stage handler that hands its job's excess to the overflow lane (module docstring).

    With `overflow_topic` None (the overflow lane's own runner) it only counts what it
    handles. Everything else of the wrapped handler (`tick`, `close`, `input`...) is the
    handler's own.
    """

    def __init__(
        self, handler: StageHandler, shares: JobShares, overflow_topic: str | None
    ) -> None:
        self.handler = handler
        self.shares = shares
        self.overflow_topic = overflow_topic

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """The handler's result for the records within their job's share, plus the
        overflow records of the others."""
        kept: list[Incoming] = []
        deferred: list[Incoming] = []
        planned: Counter[str] = Counter()
        for rec in batch:
            job_id = job_of(rec)
            n = reviews_of(rec)
            if (
                self.overflow_topic is not None
                and job_id is not None
                and not self.shares.admits(job_id, n, planned[job_id])
            ):
                deferred.append(rec)
                continue
            kept.append(rec)
            if job_id is not None:
                planned[job_id] += n
        result = StageResult()
        if self.overflow_topic is not None:
            self.shares.admitted(planned)
        if kept:
            with self.shares.holding(planned):
                result = await self.handler.handle(kept)
        if deferred:
            assert self.overflow_topic is not None
            DEFERRED.labels(self.handler.name).inc(len(deferred))
            result.events.extend(
                Outgoing(self.overflow_topic, rec.key, rec.raw, rec.headers) for rec in deferred
            )
        return result


class FairSlots:
    """`n` slots; when none is free, the next goes to the job with the fewest calls
    waiting (round robin among jobs waiting as few)."""

    def __init__(self, n: int) -> None:
        self.free = n
        # job -> its waiters, oldest first; the job first in the dict is served next.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @contextlib.asynccontextmanager
    async def slot(self, job_id: str) -> AsyncIterator[None]:
        """Hold one slot for the block, waiting for the job's turn if none is free."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(job_id, deque()).append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()  # the slot came with the cancellation: pass it on
                else:
                    self._forget(job_id, fut)
                raise
        try:
            yield
        finally:
            self._release()

    def _forget(self, job_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(job_id)
        if waiters is None:
            return
        with contextlib.suppress(ValueError):
            waiters.remove(fut)
        if not waiters:
            del self._waiting[job_id]

    def _release(self) -> None:
        while self._waiting:
            # The job with the fewest calls waiting goes first (the one waiting longest
            # among equals): a small job's few calls overtake a big job's hundreds, which
            # then has every slot again as soon as the small one has none waiting.
            job_id = min(self._waiting, key=lambda j: len(self._waiting[j]))
            waiters = self._waiting[job_id]
            fut = waiters.popleft()
            if waiters:
                self._waiting.move_to_end(job_id)
            else:
                del self._waiting[job_id]
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1
