"""Streaming an upload: body pieces -> parser -> chunk builder -> Kafka, bounded throughout.

`stream_upload` reads the request body as it arrives, counting bytes and rows against
their limits, and hands full chunks to a `ChunkSink`. `KafkaChunkSink` produces them with at most
`max_inflight` deliveries outstanding (back-pressure on the body reader) and `flush` waits
until the broker acknowledged every chunk (acks=all), so a 202 means the rows are durable.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from shared import metrics as m

from .chunks import Chunk, ChunkBuilder, UploadSummary
from .rows import RawRow, RowParser, UploadFormatError


class PayloadTooLarge(Exception):
    """The body grew past the configured upload limit while it was being read (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload body exceeds {limit} bytes")
        self.limit = limit


class TooManyRows(Exception):
    """The body holds more rows than one upload may (HTTP 413): each row costs memory
    (its dedup digest) and CPU, so the count is bounded like the bytes are."""

    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload has more than {limit} rows")
        self.limit = limit


class ChunkSink(Protocol):
    """Where finished chunks go (Kafka in the service, a list in tests)."""

    sent: int
    rows_sent: int

    async def send(self, chunk: Chunk) -> None:
        """Hand over one chunk (may wait for earlier deliveries: back-pressure)."""
        ...

    async def flush(self) -> None:
        """Wait until every chunk handed over is durably delivered."""
        ...

    def abandon(self) -> None:
        """The upload failed: stop caring about outstanding deliveries."""
        ...


class KafkaChunkSink:
    """Produces chunks to the submitted topic with a bounded number of deliveries in flight."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, max_inflight: int = 8) -> None:
        self.producer = producer
        self.topic = topic
        self.max_inflight = max_inflight
        self.sent = 0
        self.rows_sent = 0
        self._pending: deque[asyncio.Future[Any]] = deque()

    async def send(self, chunk: Chunk) -> None:
        """Queue the chunk for delivery; waits while `max_inflight` are outstanding."""
        future = await self.producer.send(self.topic, chunk.value, key=chunk.key)
        self._pending.append(future)
        self.sent += 1
        self.rows_sent += chunk.rows
        m.EVENTS_OUT.labels("api", self.topic).inc()
        m.REVIEWS_OUT.labels("api").inc(chunk.rows)
        while len(self._pending) >= self.max_inflight:
            await self._pending.popleft()

    async def flush(self) -> None:
        """Wait for the broker's acknowledgement of every chunk sent."""
        while self._pending:
            await self._pending.popleft()

    def abandon(self) -> None:
        """Mark outstanding deliveries as handled, so their errors are not reported unread."""
        while self._pending:
            self._pending.popleft().add_done_callback(_consume_result)


def _consume_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def stream_upload(
    body: AsyncIterator[bytes],
    parser: RowParser,
    builder: ChunkBuilder,
    sink: ChunkSink,
    *,
    max_bytes: int,
    max_rows: int,
) -> UploadSummary:
    """Read the whole body through `parser` and `builder` into `sink`; returns the summary.

    Raises `PayloadTooLarge`, `TooManyRows`, `UploadFormatError`, or the sink's delivery
    error; the rows
    of chunks already delivered before such an error stay delivered (ingest deduplicates a
    retried upload).
    """
    total = 0
    try:
        async for data in body:
            if not data:
                continue
            total += len(data)
            if total > max_bytes:
                raise PayloadTooLarge(max_bytes)
            await _add_rows(parser.feed(data), builder, sink, max_rows)
            # Parsing is CPU work: let other requests run between network reads.
            await asyncio.sleep(0)
        if total == 0:
            raise UploadFormatError("body is empty; send at least one review")
        await _add_rows(parser.close(), builder, sink, max_rows)
        last = builder.finish()
        if last is not None:
            await sink.send(last)
        await sink.flush()
    except BaseException:
        sink.abandon()
        raise
    finally:
        builder.summary.bytes_read = total
    return builder.summary


async def _add_rows(
    rows: list[RawRow], builder: ChunkBuilder, sink: ChunkSink, max_rows: int
) -> None:
    if builder.summary.rows + len(rows) > max_rows:
        raise TooManyRows(max_rows)
    for raw in rows:
        chunk = builder.add(raw)
        if chunk is not None:
            await sink.send(chunk)
