"""The sink: a batch's rows upserted, then its records produced and acknowledged, then cleanup.

`Sink.write(result)` is the delivery half of the contract, in this order:

1. every row (and the `dead_letters` rows of failures that leave the retry tiers) in one
   Postgres transaction, in statements of 20 rows;
2. output events, retry-tier and dead-letter records produced, each acknowledged by the
   broker (idempotent producer, acks=all);
3. the result's cleanup actions, in one more transaction.

Only after `write` returns may the runner commit the batch's offsets. Each step goes
through `Faults` on its own: an outage is waited out, a produce is retried only for the
records not yet acknowledged, and a dead letter too large for the broker goes without its
payload (which stays in its `dead_letters` row) rather than stalling the partition.

A record the broker refuses breaks aiokafka's idempotent producer for its partition:
every later send there fails with `OutOfOrderSequenceNumber` (aiokafka does not bump the
producer epoch as the Java client does; aio-libs/aiokafka#1017). So after any error the
broker answered, the `ProducerSlot` replaces the producer (a new producer id) before the
next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, OutOfOrderSequenceNumber

from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert, upsert
from shared.stage.contract import DeadLetterOut, Outgoing, PostProduce, StageResult
from shared.stage.deadletters import DEAD_LETTERS, Router, Routing, without_payload
from shared.stage.faults import Faults
from shared.stage.observer import StageObserver

log = logging.getLogger(__name__)


class Producer(Protocol):
    """Port: the part of `AIOKafkaProducer` the runtime uses."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Flush and disconnect."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a record; the future resolves once the broker acknowledged it."""
        ...


class ProducerSlot:
    """The stage's producer, replaced by a fresh one (`make()`) when its state is broken."""

    def __init__(self, make: Callable[[], Producer], stop_timeout_s: float = 5.0) -> None:
        self.make = make
        self.stop_timeout_s = stop_timeout_s
        self._current: Producer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create and start the first producer."""
        producer = self.make()
        await producer.start()
        self._current = producer

    def get(self) -> Producer:
        """The producer to use now."""
        assert self._current is not None, "ProducerSlot.start() first"
        return self._current

    async def renew(self, stale: Producer) -> None:
        """Replace `stale` (if it is still the current one) by a started new producer."""
        async with self._lock:
            if self._current is not stale:
                return  # another batch renewed it already
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stale.stop(), self.stop_timeout_s)
            fresh = self.make()
            await fresh.start()
            self._current = fresh
            log.warning("producer replaced after a broker error")

    async def stop(self) -> None:
        """Stop the current producer (bounded)."""
        if self._current is not None:
            await asyncio.wait_for(self._current.stop(), self.stop_timeout_s)


class Sink:
    """Writes one stage's `StageResult`s (see the module docstring)."""

    def __init__(
        self,
        stage: str,
        pool: ConnectionPool,
        producers: ProducerSlot,
        router: Router,
        faults: Faults,
        observer: StageObserver,
    ) -> None:
        self.stage = stage
        self.pool = pool
        self.producers = producers
        self.router = router
        self.faults = faults
        self.observer = observer

    async def write(self, result: StageResult) -> None:
        """Upsert, produce, clean up (raises `KeepsFailing` or the rows' own error)."""
        routed = [(d, self.router.route(d)) for d in result.dead_letters]
        dl_rows = [row for d, r in routed if not r.tier for row in self.router.rows(d, r)]
        writes = [*result.upserts, (DEAD_LETTERS, dl_rows)]
        writes = [(spec, rows) for spec, rows in writes if rows]
        if writes:
            await self.faults.run(lambda: self._upsert(writes), "upsert")
        todo = [(e, False) for e in result.events]
        # Only a final dead letter may lose its payload: its `dead_letters` row keeps it.
        todo += [(self.router.record(d, r), not r.tier) for d, r in routed]
        if todo:
            await self.faults.run(lambda: self._produce(todo), "produce")
        if result.cleanup:
            await self.faults.run(lambda: self._cleanup(result.cleanup), "cleanup")
        self._report(routed)
        self.observer.on_reviews_out(result.reviews_out)

    async def _upsert(self, writes: Sequence[tuple[Upsert, list[dict[str, Any]]]]) -> None:
        async with self.pool.connection() as conn:
            for spec, rows in writes:
                await upsert(conn, spec, rows)
            await conn.commit()
        for spec, rows in writes:
            self.observer.on_rows_upserted(spec.table.name, len(rows))

    async def _produce(self, todo: list[tuple[Outgoing, bool]]) -> None:
        """Send the records left in `todo` (record, is a final dead letter); acknowledged ones
        leave it, so a retry resends only the others. A dead letter the broker refuses as
        too large is sent again at once without its payload."""
        resends = 3  # records failed only by the broken producer go again at once
        while todo:
            producer = self.producers.get()
            outcomes, refused = await self._send(producer, [rec for rec, _ in todo])
            if refused:
                await self.producers.renew(producer)
            left: list[tuple[Outgoing, bool]] = []
            first: BaseException | None = None
            for (rec, dead), outcome in zip(todo, outcomes, strict=True):
                if outcome is None:
                    self.observer.on_produced(rec.topic, 1)
                elif resends > 0 and isinstance(outcome, OutOfOrderSequenceNumber):
                    left.append((rec, dead))
                elif dead and rec.value and isinstance(outcome, MessageSizeTooLargeError):
                    log.warning(
                        "dead letter too large for the broker, sent without its payload",
                        extra={"stage": self.stage, "topic": rec.topic, "bytes": len(rec.value)},
                    )
                    left.append((without_payload(rec), dead))
                else:
                    left.append((rec, dead))
                    first = first or outcome
            todo[:] = left
            resends -= 1
            if first is not None:
                raise first

    async def _send(
        self, producer: Producer, records: Sequence[Outgoing]
    ) -> tuple[list[BaseException | None], bool]:
        """Send every record and wait for each acknowledgement: None, or why it failed;
        and whether the broker refused any (which leaves the producer broken)."""
        sent: list[asyncio.Future[Any] | BaseException] = []
        for rec in records:
            try:
                sent.append(
                    await producer.send(
                        rec.topic, rec.value, key=rec.key, headers=list(rec.headers) or None
                    )
                )
            except MessageSizeTooLargeError as exc:  # refused before it was sent
                sent.append(exc)
        futures = [f for f in sent if isinstance(f, asyncio.Future)]
        acks = iter(await asyncio.gather(*futures, return_exceptions=True))
        out: list[BaseException | None] = []
        refused = False
        for f in sent:
            outcome = next(acks) if isinstance(f, asyncio.Future) else f
            out.append(outcome if isinstance(outcome, BaseException) else None)
            refused = refused or (isinstance(f, asyncio.Future) and isinstance(outcome, KafkaError))
        return out, refused

    async def _cleanup(self, actions: Sequence[PostProduce]) -> None:
        async with self.pool.connection() as conn:
            for action in actions:
                await action(conn)
            await conn.commit()

    def _report(self, routed: Sequence[tuple[DeadLetterOut, Routing]]) -> None:
        for d, r in routed:
            if r.tier:
                self.observer.on_retry(r.tier, d.failure)
            else:
                self.observer.on_dead_letter(d.failure)
            src = d.source
            log.warning(
                f"retry tier {r.tier}" if r.tier else "dead-lettered",
                extra={
                    "stage": self.stage,
                    "error_type": d.failure.kind,
                    "error": d.failure.reason,
                    "retryable": d.failure.retryable,
                    "attempt": r.attempt,
                    "job_id": d.job_id,
                    "review_id": d.review_id,
                    **(
                        {"topic": src.topic, "partition": src.partition, "offset": src.offset}
                        if src
                        else {}
                    ),
                },
            )
