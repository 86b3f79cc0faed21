"""The runner loop: poll batches, keep several in flight, commit what finished, rebalance safely.

`StageRunner` owns one consumer-group member on the stage's input topic (or on one of its
retry topics) and the delivery order: a polled batch is processed as its own task
(`BatchProcessor`: decode, handle, sink), up to `max_inflight` at once, and a finished
batch only hands its offsets to the `OffsetTracker`; a committer commits, per partition,
the end of the contiguous run of finished batches. Nothing is committed before its rows
are upserted and its records acknowledged, so a crash anywhere replays from the last
commit, and deterministic ids make the replay rewrite the same rows.

While all slots are busy the runner pauses every assigned partition but keeps polling
(a member that stops calling `getmany` for `max.poll.interval.ms` is evicted). Whatever a
poll returns becomes a batch, busy or not: a rebalance hands out fresh, unpaused
partitions (aiokafka keeps the pause flag per assignment), so a poll while busy can
return records, and dropping them would let later commits pass over them. Partitions
assigned while busy are paused at once.

A rebalance is eager (every partition is revoked, then the new assignment is handed out)
and every member of the group waits until all have revoked, so revoking must be quick:
batches of revoked partitions get `rebalance_grace_s` to finish, and are then abandoned
(cancelled). Their records are not committed, so the next owner processes them again.
What finished is committed while this member still owns the partitions; the tracker then
forgets them, and a late batch of the old assignment can never commit for the new one.

On stop (SIGTERM) batches still in their handler (waiting on the LLM) are cancelled at
once, those already writing get `shutdown_grace_s`, what finished is committed and the
member leaves its group, every step bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.db.pool import ConnectionPool
from shared.metrics import Health
from shared.settings import CommonSettings
from shared.stage.batch import BatchProcessor
from shared.stage.contract import StageHandler, Ticks
from shared.stage.deadletters import Router, parse_delays
from shared.stage.faults import KAFKA, Faults, InfraProbe, short
from shared.stage.observer import PrometheusObserver, StageObserver
from shared.stage.offsets import OffsetTracker, Span
from shared.stage.sink import Producer, ProducerSlot, Sink
from shared.topics import overflow_topic, retry_topic, stage_group

log = logging.getLogger(__name__)

Polled = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]


class Consumer(Protocol):
    """Port: the part of `AIOKafkaConsumer` the runner uses."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Leave the group and disconnect."""

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        """Join the group for `topics`."""

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned now."""
        ...

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching these partitions."""

    def paused(self) -> set[TopicPartition]:
        """The paused partitions of the current assignment."""
        ...

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch these partitions again."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Polled:
        """Fetched records by partition."""
        ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the group's offsets."""


@dataclass(eq=False)
class _Batch:
    """A batch in flight: its task, its spans, and how far it got."""

    spans: list[Span]
    tps: frozenset[TopicPartition]
    task: asyncio.Task[None] | None = None
    waiting: bool = False  # a retry tier's batch waiting for its records' due time
    writing: bool = False  # its results are being written: better finished than abandoned
    started: float = field(default_factory=time.perf_counter)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.runner.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.runner.assigned(set(assigned))


class StageRunner:
    """Runs one `StageHandler` against Kafka and Postgres with at-least-once semantics."""

    def __init__(
        self,
        handler: StageHandler,
        settings: CommonSettings,
        pool: ConnectionPool,
        *,
        max_records: int = 200,
        max_inflight: int = 1,
        group_id: str | None = None,
        health: Health | None = None,
        retry_tier: int = 0,
        overflow: bool = False,
        observer: StageObserver | None = None,
        probe: Callable[[str], Awaitable[bool]] | None = None,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        rt = settings.runtime
        self.max_records = max_records
        self.max_inflight = max_inflight
        self.retry_tier = retry_tier
        self.overflow = overflow
        self.health = health or Health()
        self.observer = observer or PrometheusObserver(handler.name)
        prefix = settings.kafka.topic_prefix
        group = group_id or stage_group(handler.name, prefix)
        if retry_tier:
            # A tier's consumer waits for its records' due time; it never holds up the
            # input topic's partitions, which is the point of the tiers.
            self.input_topic = retry_topic(handler.name, retry_tier).full_name(prefix)
            self.group_id = f"{group}.retry"
        elif overflow:
            # The overflow lane (shared.stage.fair): a group of its own, so its backlog
            # and the input topic's are consumed side by side.
            self.input_topic = overflow_topic(handler.name).full_name(prefix)
            self.group_id = f"{group}.overflow"
        else:
            self.input_topic = handler.input.full_name(prefix)
            self.group_id = group
        self._own_probe: InfraProbe | None = None
        if probe is None:
            self._own_probe = InfraProbe(
                settings.db.libpq_url(), settings.kafka.bootstrap_servers, self.health
            )
            probe = self._own_probe.works
        self.faults = Faults(
            handler.name, probe, self.health, self.observer, max_tries=rt.max_tries
        )
        self.router = Router(handler.name, prefix, parse_delays(rt.retry_delays_s))
        self.pool = pool
        self.consumer: Consumer | None = consumer
        self.producers = ProducerSlot(
            (lambda: producer) if producer is not None else self._new_producer
        )
        self._injected = consumer is not None
        self.processor: BatchProcessor | None = None
        self.offsets = OffsetTracker()
        self.batches: dict[asyncio.Task[None], _Batch] = {}
        self.stopping = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._commit_wanted = asyncio.Event()
        self._fatal: BaseException | None = None
        self._tick: asyncio.Task[None] | None = None
        self._tick_writing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the producer and join the consumer group; waits out a broker outage."""
        delay = 0.5
        while True:
            try:
                await self._connect()
                break
            except (KafkaError, OSError) as exc:
                if self.stopping.is_set():
                    raise
                self.health.down(KAFKA, short(exc))
                self.observer.on_infra_fault(KAFKA)
                log.warning(
                    "cannot reach the broker, retrying",
                    extra={"stage": self.handler.name, "error": short(exc), "retry_in_s": delay},
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
        assert self.consumer is not None
        self.processor = BatchProcessor(
            self.handler,
            Sink(
                self.handler.name,
                self.pool,
                self.producers,
                self.router,
                self.faults,
                self.observer,
            ),
            self.faults,
            self.observer,
        )
        self.consumer.subscribe([self.input_topic], listener=_Listener(self))
        self.health.ready = True
        log.info("stage started", extra={"stage": self.handler.name, "topic": self.input_topic})

    async def _connect(self) -> None:
        if self._injected:
            assert self.consumer is not None
            await self.producers.start()
            await self.consumer.start()
            return
        k = self.settings.kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            group_id=self.group_id,
            client_id=self._client_id(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            max_partition_fetch_bytes=k.max_partition_fetch_bytes,
            fetch_max_bytes=k.fetch_max_bytes,
        )
        try:
            await self.producers.start()
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)
            with contextlib.suppress(Exception):
                await self.producers.stop()
            raise
        self.consumer = consumer

    def _client_id(self) -> str:
        if self.retry_tier:
            return f"voc-{self.handler.name}-retry{self.retry_tier}"
        return f"voc-{self.handler.name}" + ("-overflow" if self.overflow else "")

    def _new_producer(self) -> Producer:
        producer: Producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
            client_id=self._client_id(),
        )
        return producer

    async def stop(self) -> None:
        """Abandon handler work, let writes finish briefly, commit, leave the group."""
        self.stopping.set()
        self.health.ready = False
        grace = self.settings.runtime.shutdown_grace_s
        if self._tick is not None:
            await self._end([self._tick], grace if self._tick_writing else 0.0)
        writing = [t for t, b in self.batches.items() if b.writing]
        await self._end([t for t in self.batches if t not in writing], 0.0)
        await self._end(writing, grace)
        if self.consumer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit(), grace)
            await self._bounded(self.consumer.stop(), "leaving the group")
        await self._bounded(self.producers.stop(), "stopping the producer")
        if self._own_probe is not None:
            await self._own_probe.close()

    async def _bounded(self, step: Awaitable[Any], what: str) -> None:
        try:
            await asyncio.wait_for(step, self.settings.runtime.shutdown_grace_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning(f"{what} failed", extra={"stage": self.handler.name, "error": short(exc)})

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll and process until `stopping` is set; raises if a batch failed fatally."""
        assert self.consumer is not None
        committer = asyncio.create_task(self._committer())
        if isinstance(self.handler, Ticks) and not self.retry_tier and not self.overflow:
            self._tick = asyncio.create_task(self._tick_loop(self.handler))
        delay = 0.2
        try:
            while not self.stopping.is_set():
                self.health.beat()
                if self._fatal is not None:
                    raise self._fatal
                busy = self._busy()
                self._sync_pause(busy)
                try:
                    polled = await self.consumer.getmany(
                        timeout_ms=0 if busy else 200, max_records=self.max_records
                    )
                except KafkaError as exc:
                    # e.g. the coordinator or a fetch failing while the broker is away:
                    # never fatal, never a busy loop
                    self.health.down(KAFKA, short(exc))
                    self.observer.on_infra_fault(KAFKA)
                    log.warning(
                        "poll failed", extra={"stage": self.handler.name, "error": short(exc)}
                    )
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.2
                if any(polled.values()):
                    self._spawn(polled)  # even when busy: see the module docstring
                elif busy:
                    await asyncio.wait(
                        list(self.batches), timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                    )
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    def _busy(self) -> bool:
        return len(self.batches) >= self.max_inflight

    def _sync_pause(self, busy: bool) -> None:
        """Paused exactly while busy (a new assignment arrives unpaused)."""
        assert self.consumer is not None
        if busy:
            fresh = self.consumer.assignment() - self.consumer.paused()
            if fresh:
                self.consumer.pause(*fresh)
        else:
            paused = self.consumer.paused()
            if paused:
                self.consumer.resume(*paused)

    def _spawn(self, polled: Polled) -> None:
        ranges = {tp: (recs[0].offset, recs[-1].offset + 1) for tp, recs in polled.items() if recs}
        batch = _Batch(self.offsets.begin(ranges), frozenset(ranges))
        records = [r for recs in polled.values() for r in recs]
        self.observer.on_batch_start(self.input_topic, len(records))
        task = asyncio.create_task(self._process(batch, records))
        batch.task = task
        self.batches[task] = batch
        self.observer.on_inflight(len(self.batches))
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.batches.pop(task, None)
        self.observer.on_inflight(len(self.batches))
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()

    async def _process(self, batch: _Batch, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        assert self.processor is not None
        if self.retry_tier:
            batch.waiting = True
            if not await self.processor.wait_until_due(records, self.stopping):
                return  # stopping: left uncommitted, replayed after a restart
            batch.waiting = False

        def writing() -> None:
            batch.writing = True

        await self.processor.process(records, writing)
        self.offsets.finish(batch.spans)
        self._commit_wanted.set()
        self.observer.on_batch_done(time.perf_counter() - batch.started)

    # -- commits ---------------------------------------------------------------------------

    async def _committer(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit()

    async def _commit(self) -> None:
        """Commit what finished, for the partitions assigned now."""
        assert self.consumer is not None
        async with self._commit_lock:
            offsets = self.offsets.committable(self.consumer.assignment())
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                # The group rebalanced (or the partition left us): the new owner replays
                # from the last commit; rows are idempotent, so this costs repeated work.
                self.observer.on_commit(False)
                log.warning(
                    "commit failed", extra={"stage": self.handler.name, "error": short(exc)}
                )
                return
            self.offsets.committed(offsets)
            self.observer.on_commit(True)

    # -- rebalances ------------------------------------------------------------------------

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Partitions leave this member: their batches finish within the grace period or
        are abandoned, what finished is committed, then the tracker forgets them."""
        affected = [t for t, b in self.batches.items() if b.tps & revoked]
        waiting = [t for t in affected if self.batches[t].waiting]
        await self._end(waiting, 0.0)  # not started yet: nothing to lose by abandoning it
        await self._end(
            [t for t in affected if t not in waiting], self.settings.runtime.rebalance_grace_s
        )
        if self.consumer is not None:
            await self._commit()
        async with self._commit_lock:
            self.offsets.revoke(revoked)
        log.info(
            "partitions revoked",
            extra={
                "stage": self.handler.name,
                "topic": self.input_topic,
                "partitions": sorted(tp.partition for tp in revoked),
                "abandoned": sum(1 for t in affected if t.cancelled()),
            },
        )

    def assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions arrive: paused at once if every slot is busy."""
        if assigned and self.consumer is not None and self._busy():
            self.consumer.pause(*assigned)
        log.info(
            "partitions assigned",
            extra={
                "stage": self.handler.name,
                "topic": self.input_topic,
                "partitions": sorted(tp.partition for tp in assigned),
            },
        )

    async def _end(self, tasks: Sequence[asyncio.Task[None]], grace_s: float) -> None:
        """Let `tasks` finish within `grace_s`, then cancel the rest and wait (bounded)."""
        if not tasks:
            return
        pending: set[asyncio.Task[None]] = set(tasks)
        if grace_s > 0:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for t in pending:
            t.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=5.0)
            if stuck:
                log.error(
                    "batches did not end when cancelled",
                    extra={"stage": self.handler.name, "batches": len(stuck)},
                )

    # -- ticks -----------------------------------------------------------------------------

    async def _tick_loop(self, handler: Ticks) -> None:
        assert self.processor is not None
        sink = self.processor.sink
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), handler.tick_interval_s)
            if self.stopping.is_set():
                return
            try:
                result = await handler.tick()
                # From here on the tick is finished rather than abandoned on stop: its rows
                # may be written already, and no offset would replay its events.
                self._tick_writing = True
                await sink.write(result)
            except Exception:
                log.exception("tick failed", extra={"stage": self.handler.name})
            finally:
                self._tick_writing = False
