"""The stage runtime: consume a batch, run the stage's core, upsert, produce, then commit.

Every pipeline service is a `StageHandler` (its pure-ish core plus the reads it needs) run
by `StageRunner`. The runner owns the delivery semantics, so no stage re-implements them:

1. `getmany` a batch of records from the input topic (manual commits only);
2. decode each record into the topic's event model; an undecodable or schema-invalid
   record is a poison record and goes to the stage's dead-letter topic;
3. `handler.handle(events)` returns rows to upsert, events to emit and reviews that failed
   for good (dead-lettered alone, with their reason);
4. all rows are upserted in one Postgres transaction (statements of 20 rows);
5. output and dead-letter records are produced and their delivery awaited (acks=all);
6. only then the offsets are committed: per partition, the highest run of consecutively
   finished offsets, so several batches can be in flight (LLM stages need that to keep the
   quota busy) without ever committing past an unfinished record.

A crash anywhere before step 6 replays the batch; deterministic ids make the replay upsert
the same rows, so nothing is lost and nothing doubles. Infrastructure errors retry the
batch with backoff; an unexpected error is isolated to the record that causes it, which is
dead-lettered, so one bad record never blocks its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from shared import deadletter as dl
from shared import metrics as m
from shared.db.models import DeadLetter
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert, upsert
from shared.errors import TransientInfraError
from shared.events import Event
from shared.llm.context import bypass_cache
from shared.logging import setup_logging
from shared.settings import CommonSettings
from shared.topics import RETRY_TIERS, TopicSpec, retry_topic, stage_group

log = logging.getLogger(__name__)

DEAD_LETTERS = Upsert(
    DeadLetter.__table__,  # type: ignore[arg-type]
    key=("id",),
    # every column but created_at (`attempts` has a server default but is always known)
    columns=tuple(c.name for c in DeadLetter.__table__.columns if c.name != "created_at"),
)
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    KafkaError,
    OSError,
    TransientInfraError,
)


@dataclass(frozen=True)
class Incoming:
    """A decoded input record with where it came from."""

    event: Any
    topic: str
    partition: int
    offset: int
    raw: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Outgoing:
    """A record to produce: full topic name, key and serialised value."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def event(cls, topic: str, key: str, event: Event) -> Outgoing:
        """An event record keyed by `key`."""
        return cls(topic, key.encode(), event.to_bytes())


@dataclass(frozen=True)
class DeadLetterOut:
    """A review (or whole record) the stage gives up on, and why."""

    error_type: str
    error: str
    value: bytes
    key: bytes | None
    source: Incoming | None
    job_id: str | None = None
    review_id: str | None = None
    review_ids: tuple[str, ...] = ()  # a whole record's reviews, each counted as failed


PostProduce = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


@dataclass
class StageResult:
    """What a batch produced: rows to upsert, events to emit, dead letters.

    `cleanup` actions run after the events were produced (and acknowledged), together in
    one transaction: for state that may only go once its content is safely downstream,
    such as `learn`'s held batches. A crash before they commit replays them, so they must
    be idempotent (a DELETE by key is).
    """

    upserts: list[tuple[Upsert, list[dict[str, Any]]]] = field(default_factory=list)
    events: list[Outgoing] = field(default_factory=list)
    dead_letters: list[DeadLetterOut] = field(default_factory=list)
    reviews_out: int = 0
    cleanup: list[PostProduce] = field(default_factory=list)

    def merge(self, other: StageResult) -> None:
        """Add another result's rows, events, dead letters and cleanup to this one."""
        self.upserts.extend(other.upserts)
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)
        self.reviews_out += other.reviews_out
        self.cleanup.extend(other.cleanup)


class StageHandler(Protocol):
    """A pipeline stage as the runner sees it."""

    name: str
    input: TopicSpec

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Process decoded records; must not write Postgres or Kafka itself."""
        ...


class TickingHandler(StageHandler, Protocol):
    """A stage that also does time-driven work (learn timeouts, report completion)."""

    tick_interval_s: float

    async def tick(self) -> StageResult:
        """Called every `tick_interval_s`; its result is upserted and produced."""
        ...


@dataclass
class _PartitionOffsets:
    """Offsets handed out and finished for one partition, to commit contiguous runs."""

    pending: list[int] = field(default_factory=list)  # batch start offsets, in order
    done: dict[int, int] = field(default_factory=dict)  # batch start -> next offset
    ready: int = -1  # next offset after the contiguous run of finished batches
    committed: int = -1  # what the broker has acknowledged

    def committable(self) -> int | None:
        """The offset to commit now, if it moved past the last acknowledged commit."""
        while self.pending and self.pending[0] in self.done:
            self.ready = self.done.pop(self.pending.pop(0))
        return self.ready if self.ready > self.committed else None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.runner.drain()
        for tp in revoked:
            self.runner.offsets.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": [tp.partition for tp in assigned]})


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
        health: m.Health | None = None,
        retry_tier: int = 0,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.pool = pool
        self.max_records = max_records
        self.max_inflight = max_inflight
        self.prefix = settings.kafka.topic_prefix
        self.retry_tier = retry_tier
        self._tier_suffix = f"-retry{retry_tier}" if retry_tier else ""
        self.retry_delays = dl.parse_delays(settings.runtime.retry_delays_s)
        group = group_id or stage_group(handler.name, self.prefix)
        if retry_tier:
            # A tier's consumer waits for its records' due time; it never holds up the
            # input topic's partitions, which is the point of the tiers.
            self.input_topic = retry_topic(handler.name, retry_tier).full_name(self.prefix)
            self.group_id = f"{group}.retry"
        else:
            self.input_topic = handler.input.full_name(self.prefix)
            self.group_id = group
        self.offsets: dict[TopicPartition, _PartitionOffsets] = {}
        self.inflight: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._commit_lock = asyncio.Lock()
        self._fatal: BaseException | None = None
        self.health = health or m.Health()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the producer and the consumer group."""
        k = self.settings.kafka
        self.producer = AIOKafkaProducer(
            bootstrap_servers=k.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
            client_id=f"voc-{self.handler.name}",
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            group_id=self.group_id,
            client_id=f"voc-{self.handler.name}"
            + (f"-retry{self.retry_tier}" if self.retry_tier else ""),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            max_partition_fetch_bytes=k.max_partition_fetch_bytes,
            fetch_max_bytes=k.fetch_max_bytes,
        )
        await self.consumer.start()
        self.consumer.subscribe([self.input_topic], listener=_Rebalance(self))
        log.info("stage started", extra={"stage": self.handler.name, "topic": self.input_topic})

    async def stop(self) -> None:
        """Finish in-flight batches, commit, and leave the group."""
        self.stopping.set()
        self.health.ready = False
        await self.drain()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def drain(self) -> None:
        """Wait for every in-flight batch to finish (and commit)."""
        if self.inflight:
            await asyncio.gather(*list(self.inflight), return_exceptions=True)

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll and process until `stopping` is set; raises if a batch failed fatally."""
        assert self.consumer is not None
        ticker = None
        if hasattr(self.handler, "tick") and not self.retry_tier:
            ticker = asyncio.create_task(self._tick_loop())
        try:
            self.health.ready = True
            while not self.stopping.is_set():
                self.health.beat()
                if self._fatal is not None:
                    raise self._fatal
                if len(self.inflight) >= self.max_inflight:
                    # Busy: stop fetching but keep polling, or a batch that outlasts
                    # max.poll.interval.ms would get this member evicted from the group.
                    self.consumer.pause(*self.consumer.assignment())
                    await asyncio.wait(
                        self.inflight, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                    )
                    await self.consumer.getmany(timeout_ms=0)
                    continue
                if self.consumer.paused():
                    self.consumer.resume(*self.consumer.paused())
                polled = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                records = [r for recs in polled.values() for r in recs]
                if not records:
                    continue
                for tp, recs in polled.items():
                    self.offsets.setdefault(tp, _PartitionOffsets()).pending.append(recs[0].offset)
                task = asyncio.create_task(self._process(polled))
                self.inflight.add(task)
                m.INFLIGHT_BATCHES.labels(self.handler.name).set(len(self.inflight))
                task.add_done_callback(self._task_done)
        finally:
            if ticker is not None:
                # Let a running tick finish: its rows may be committed already and its
                # events (which no offset would replay) must still go out.
                self.stopping.set()
                await ticker

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        m.INFLIGHT_BATCHES.labels(self.handler.name).set(len(self.inflight))
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()

    async def _process(self, polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        started = time.perf_counter()
        name = self.handler.name
        records = [r for recs in polled.values() for r in recs]
        m.EVENTS_IN.labels(name, self.input_topic).inc(len(records))
        m.BATCH_SIZE.labels(name).observe(len(records))
        if self.retry_tier and not await self._wait_until_due(records):
            return  # stopping: leave the batch uncommitted, it is replayed after a restart
        good, poison = self._decode(records)
        # A replay's marks travel with everything this batch produces, and `voc-no-cache`
        # makes this task's LLM calls skip the result cache.
        marks = _replay_marks(records)
        if any(k == NO_CACHE_HEADER for k, _ in marks):
            bypass_cache.set(True)
        await self._handle_and_sink(good, poison, marks)
        for tp, recs in polled.items():
            po = self.offsets.get(tp)
            if po is not None and recs[0].offset in po.pending:
                po.done[recs[0].offset] = recs[-1].offset + 1
        await self._commit()
        m.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)

    async def _wait_until_due(self, records: Sequence[ConsumerRecord[Any, Any]]) -> bool:
        """Sleep until the batch's last record is due; False if the runner is stopping."""
        due_ms = max(dl.not_before_ms(dl.header_map(r.headers or ())) for r in records)
        delay = due_ms / 1000 - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
        return not self.stopping.is_set()

    def _decode(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> tuple[list[Incoming], list[DeadLetterOut]]:
        good: list[Incoming] = []
        poison: list[DeadLetterOut] = []
        model = self.handler.input.model
        assert model is not None
        for r in records:
            raw = r.value or b""
            headers = tuple(r.headers or ())
            try:
                event = model.model_validate_json(raw)
            except (ValidationError, ValueError) as exc:
                src = Incoming(None, r.topic, r.partition, r.offset, raw, r.key, headers)
                poison.append(
                    DeadLetterOut(
                        error_type="PoisonRecord",
                        error=_short(exc),
                        value=raw,
                        key=r.key,
                        source=src,
                        job_id=_job_id_of(raw),
                        review_ids=_review_ids_of(raw),
                    )
                )
                continue
            good.append(Incoming(event, r.topic, r.partition, r.offset, raw, r.key, headers))
        return good, poison

    async def _handle_and_sink(
        self,
        good: list[Incoming],
        poison: list[DeadLetterOut],
        marks: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Handle and sink; if the sink rejects the rows (not an outage), find the record."""
        result = await self._handle_isolated(good)
        result.dead_letters.extend(poison)
        if marks:
            result.events = [
                Outgoing(e.topic, e.key, e.value, e.headers + marks) for e in result.events
            ]
        try:
            await self._with_infra_retry(functools.partial(self._sink, result))
        except INFRA_ERRORS:
            raise  # an outage that outlived the retries (we are stopping): not the record
        except Exception as exc:
            # A row Postgres refuses (too long, NUL byte, constraint) would fail the same way
            # after every restart: isolate the record and dead-letter it instead.
            if len(good) > 1:
                log.warning("sink failed, isolating records", extra={"error": _short(exc)})
                if poison:
                    await self._handle_and_sink([], poison, marks)
                for rec in good:
                    await self._handle_and_sink([rec], [], marks)
                return
            log.exception("sink failed, dead-lettering record", extra={"stage": self.handler.name})
            fallback = StageResult(dead_letters=[_record_dead_letter(r, exc) for r in good])
            fallback.dead_letters.extend(poison)
            await self._with_infra_retry(functools.partial(self._sink, fallback))

    async def _handle_isolated(self, batch: list[Incoming]) -> StageResult:
        """Run the handler; on an unexpected error, find the record causing it."""
        if not batch:
            return StageResult()
        try:
            return await self._with_infra_retry(lambda: self.handler.handle(batch))
        except INFRA_ERRORS:
            raise  # an outage that outlived the retries (we are stopping): not the record
        except Exception as exc:
            if len(batch) == 1:
                rec = batch[0]
                log.exception(
                    "record failed, dead-lettering",
                    extra=_where(rec) | {"stage": self.handler.name},
                )
                return StageResult(dead_letters=[_record_dead_letter(rec, exc)])
            merged = StageResult()
            for rec in batch:
                merged.merge(await self._handle_isolated([rec]))
            return merged

    async def _with_infra_retry(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        delay = 0.2
        while True:
            try:
                return await fn()
            except INFRA_ERRORS as exc:
                if self.stopping.is_set() and delay > 5:
                    raise
                log.warning(
                    "infrastructure error, retrying batch",
                    extra={"stage": self.handler.name, "error": _short(exc), "retry_in_s": delay},
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    # -- sinks -----------------------------------------------------------------------------

    async def _sink(self, result: StageResult) -> None:
        """Upsert rows in one transaction, produce events and dead letters, then run the
        result's cleanup actions in one more transaction."""
        name = self.handler.name
        routed = [(d, self._route(d)) for d in result.dead_letters]
        final = [(d, r) for d, r in routed if not r.tier]
        dl_rows = [row for d, r in final for row in self._dead_letter_rows(d, r)]
        writes = [*result.upserts, (DEAD_LETTERS, dl_rows)] if dl_rows else result.upserts
        if any(rows for _, rows in writes):
            async with self.pool.connection() as conn:
                for spec, rows in writes:
                    if rows:
                        await upsert(conn, spec, rows)
                        m.ROWS_UPSERTED.labels(name, spec.table.name).inc(len(rows))
                await conn.commit()
        await self.produce(
            result.events + [Outgoing(r.topic, d.key, d.value, r.headers) for d, r in routed]
        )
        if result.cleanup:
            async with self.pool.connection() as conn:
                for action in result.cleanup:
                    await action(conn)
                await conn.commit()
        for d, r in routed:
            if r.tier:
                m.RETRIES.labels(name, str(r.tier)).inc()
            else:
                m.DEAD_LETTERS.labels(name, d.error_type).inc()
            log.warning(
                f"retry tier {r.tier}" if r.tier else "dead-lettered",
                extra={
                    "stage": name,
                    "error_type": d.error_type,
                    "error": d.error,
                    "attempt": r.attempt,
                    "job_id": d.job_id,
                    "review_id": d.review_id,
                    **(_where(d.source) if d.source else {}),
                },
            )
        m.REVIEWS_OUT.labels(name).inc(result.reviews_out)

    async def produce(self, records: Sequence[Outgoing]) -> None:
        """Send records and wait until the broker has acknowledged every one."""
        assert self.producer is not None
        futures = []
        for rec in records:
            futures.append(
                await self.producer.send(
                    rec.topic, rec.value, key=rec.key, headers=list(rec.headers) or None
                )
            )
            m.EVENTS_OUT.labels(self.handler.name, rec.topic).inc()
        if futures:
            await asyncio.gather(*futures)

    def _origin(self, d: DeadLetterOut) -> dl.Origin:
        src = d.source
        if src is None:
            return dl.Origin("", -1, -1, 0, None)
        return dl.origin_of(src.topic, src.partition, src.offset, dl.header_map(src.headers))

    def _route(self, d: DeadLetterOut) -> dl.Routing:
        return dl.route(
            stage=self.handler.name,
            prefix=self.prefix,
            origin=self._origin(d),
            error_type=_clean(d.error_type)[:200],
            error=_clean(d.error),
            retryable=d.error_type in dl.RETRYABLE_ERRORS,
            delays_s=self.retry_delays,
            job_id=_safe_id(d.job_id),
            review_id=_safe_id(d.review_id),
        )

    def _dead_letter_rows(self, d: DeadLetterOut, r: dl.Routing) -> list[dict[str, Any]]:
        """One `dead_letters` row per failed review (or one for a record without reviews)."""
        o = self._origin(d)
        base = {
            "stage": self.handler.name,
            "job_id": _safe_id(d.job_id),
            "topic": o.topic,
            "partition": o.partition,
            "offset": o.offset,
            "error_type": _clean(d.error_type)[:200],
            "error": _clean(d.error)[:2000],
            "attempts": r.attempt,
            "payload": d.value,
            "redriven_at": None,
        }
        reviews = [d.review_id] if d.review_id else list(d.review_ids)
        reviews = [x for x in reviews if _safe_id(x)]
        if not reviews:
            ident = f"{self.handler.name}:{o.topic}:{o.partition}:{o.offset}"
            return [base | {"id": ident, "review_id": None}]
        return [base | {"id": f"{self.handler.name}:{x}", "review_id": x} for x in reviews]

    async def _commit(self) -> None:
        assert self.consumer is not None
        async with self._commit_lock:
            offsets = {}
            for tp, po in self.offsets.items():
                nxt = po.committable()
                if nxt is not None:
                    offsets[tp] = nxt
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
                for tp, nxt in offsets.items():
                    if tp in self.offsets:
                        self.offsets[tp].committed = nxt
                m.COMMITS.labels(self.handler.name, "ok").inc()
                m.LAST_COMMIT.labels(self.handler.name).set(time.time())
            except (CommitFailedError, KafkaError) as exc:
                # The group rebalanced: the new owner replays from the last commit; our
                # rows are idempotent, so this costs only repeated work.
                m.COMMITS.labels(self.handler.name, "failed").inc()
                log.warning(
                    "commit failed", extra={"stage": self.handler.name, "error": _short(exc)}
                )

    async def _tick_loop(self) -> None:
        handler: Any = self.handler
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), handler.tick_interval_s)
            if self.stopping.is_set():
                return
            try:
                result: StageResult = await handler.tick()
                await self._with_infra_retry(functools.partial(self._sink, result))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick failed", extra={"stage": self.handler.name})


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _where(rec: Incoming) -> dict[str, Any]:
    return {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}


REPLAY_HEADER = "voc-replay"
NO_CACHE_HEADER = "voc-no-cache"


def _replay_marks(records: Sequence[ConsumerRecord[Any, Any]]) -> tuple[tuple[str, bytes], ...]:
    """The replay headers any record of the batch carries (each key once)."""
    marks: dict[str, bytes] = {}
    for r in records:
        for k, v in r.headers or ():
            if k in (REPLAY_HEADER, NO_CACHE_HEADER):
                marks[k] = v
    return tuple(marks.items())


def _clean(text: str) -> str:
    """Postgres text cannot hold NUL characters (garbage records carry them)."""
    return text.replace("\x00", "\\x00")


def _safe_id(value: object) -> str | None:
    """An id that fits the 36-character id columns, else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 36 else None


def _review_ids(event: Any) -> tuple[str, ...]:
    """The ids of the reviews a stage event carries (for whole-record dead letters)."""
    if event is None:
        return ()
    reviews = getattr(event, "reviews", None)
    if reviews is not None:
        return tuple(r.id for r in reviews if _safe_id(getattr(r, "id", None)))
    return tuple(r for r in getattr(event, "review_ids", ()) if _safe_id(r))


def _review_ids_of(raw: bytes) -> tuple[str, ...]:
    """Best effort: review ids inside an undecodable-as-model but valid JSON record."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(doc, dict):
        return ()
    ids: list[Any] = []
    if isinstance(doc.get("reviews"), list):
        ids = [r.get("id") for r in doc["reviews"] if isinstance(r, dict)]
    elif isinstance(doc.get("review_ids"), list):
        ids = doc["review_ids"]
    return tuple(i for i in ids if _safe_id(i))


def _record_dead_letter(rec: Incoming, exc: BaseException) -> DeadLetterOut:
    """A whole decoded record given up on: every review in it counts as failed."""
    return DeadLetterOut(
        error_type=type(exc).__name__,
        error=_short(exc),
        value=rec.raw,
        key=rec.key,
        source=rec,
        job_id=_safe_id(getattr(rec.event, "job_id", None)),
        review_ids=_review_ids(rec.event),
    )


def _job_id_of(raw: bytes) -> str | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return _safe_id(doc.get("job_id")) if isinstance(doc, dict) else None


async def run_service(
    name: str,
    build: Callable[[CommonSettings, ConnectionPool], Awaitable[StageHandler]],
    *,
    max_records: int = 200,
    max_inflight: int = 1,
    settings: CommonSettings | None = None,
    retries: bool = True,
) -> None:
    """Entry point of a stage process: logging, metrics, wiring, signals, run until SIGTERM.

    Besides the input topic's runner, one runner per retry tier consumes the stage's retry
    topics (`retries=False` for a stage that never reports a retryable error).
    """
    settings = settings or CommonSettings()
    setup_logging(name, settings.runtime.log_level)
    health = m.serve_metrics(settings.runtime.metrics_port)
    tiers = (
        min(len(dl.parse_delays(settings.runtime.retry_delays_s)), RETRY_TIERS) if retries else 0
    )
    pool = ConnectionPool(settings.db.libpq_url(), size=max(2, max_inflight + 1 + tiers))
    await pool.open()
    from shared.deletedjobs import DeletedJobs, SkipDeletedJobs  # imports this module

    # Records of deleted jobs never reach a stage's handler (see shared.deletedjobs).
    handler: StageHandler = SkipDeletedJobs(await build(settings, pool), DeletedJobs(pool))
    runners = [
        StageRunner(
            handler,
            settings,
            pool,
            max_records=max_records,
            max_inflight=max_inflight,
            health=health,
        ),
        *(
            StageRunner(handler, settings, pool, max_records=max_records, retry_tier=t)
            for t in range(1, tiers + 1)
        ),
    ]

    def stop_all() -> None:
        for r in runners:
            r.stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    try:
        for r in runners:
            await r.start()
        tasks = [asyncio.create_task(r.run()) for r in runners]
        # The first runner to return either saw the stop signal or failed: stop the rest.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for r in runners:
            await r.stop()
        closer = getattr(handler, "close", None)
        if closer is not None:
            await closer()
        await pool.close()
        log.info("stage stopped", extra={"stage": name})


def main(
    name: str,
    build: Callable[[CommonSettings, ConnectionPool], Awaitable[StageHandler]],
    *,
    max_records: int,
    max_inflight: int,
    retries: bool = True,
) -> None:
    """Run a stage process on uvloop until SIGTERM: what every `services/<stage>/__main__`
    calls with its build function and its batch settings."""
    import uvloop

    uvloop.run(
        run_service(
            name,
            build,
            max_records=max_records,
            max_inflight=max_inflight,
            settings=CommonSettings(),
            retries=retries,
        )
    )
