"""Helpers of the ingest integration tests: build and produce chunks, read topics, poll Postgres.

Everything talks to the real stack named by the environment the `stack` fixture sets
(KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, VOC_TOPIC_PREFIX).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.events import ReviewsSubmitted, SubmittedRow
from shared.reviews import normalise_row
from shared.settings import DatabaseSettings
from shared.topics import REVIEWS_INGESTED, REVIEWS_SUBMITTED, dlq


def prefix() -> str:
    """The stack's topic prefix."""
    return os.environ.get("VOC_TOPIC_PREFIX", "voc.")


def bootstrap() -> str:
    """The stack's Kafka bootstrap servers."""
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


def submitted_topic() -> str:
    """reviews.submitted on the stack."""
    return REVIEWS_SUBMITTED.full_name(prefix())


def ingested_topic() -> str:
    """reviews.ingested on the stack."""
    return REVIEWS_INGESTED.full_name(prefix())


def dlq_topic() -> str:
    """ingest's dead-letter topic on the stack."""
    return dlq("ingest").full_name(prefix())


def new_job() -> str:
    """A random job id, so tests never see each other's rows."""
    return str(uuid.uuid4())


def submitted(
    job_id: str, upload_id: str, chunk_no: int, rows: Sequence[dict[str, Any]], first_row: int = 1
) -> ReviewsSubmitted:
    """A `ReviewsSubmitted` chunk as the API sends it: rows normalised, numbered from
    `first_row`."""
    return ReviewsSubmitted(
        job_id=job_id,
        tenant_id="it-tenant",
        upload_id=upload_id,
        chunk_no=chunk_no,
        rows=[SubmittedRow(**normalise_row(r), row=first_row + i) for i, r in enumerate(rows)],
    )


def key_of(event: ReviewsSubmitted) -> bytes:
    """The record key the API uses for a chunk."""
    return ReviewsSubmitted.key(event.job_id, event.upload_id, event.chunk_no)


@asynccontextmanager
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent, acks=all producer to the stack's broker."""
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap(),
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_request_size=8 * 1024 * 1024,
    )
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def send_chunk(p: AIOKafkaProducer, event: ReviewsSubmitted) -> None:
    """Produce one chunk on reviews.submitted and wait for the ack."""
    await p.send_and_wait(submitted_topic(), event.to_bytes(), key=key_of(event))


async def end_offsets(topic: str) -> dict[TopicPartition, int]:
    """The current end offset of every partition of `topic` (where new records will land)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if parts is None:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return dict(await c.end_offsets(tps))
    finally:
        await c.stop()


async def collect(
    since: dict[TopicPartition, int],
    keep: Callable[[ConsumerRecord[bytes, bytes]], bool],
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout: float,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read from `since` on, keep records passing `keep`, until `done(kept)` or `timeout`."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(), enable_auto_commit=False, max_partition_fetch_bytes=16 << 20
    )
    await c.start()
    kept: list[ConsumerRecord[bytes, bytes]] = []
    try:
        c.assign(list(since))
        for tp, off in since.items():
            c.seek(tp, off)
        deadline = time.monotonic() + timeout
        while not done(kept) and time.monotonic() < deadline:
            polled = await c.getmany(timeout_ms=200, max_records=5000)
            for recs in polled.values():
                kept.extend(r for r in recs if keep(r))
        return kept
    finally:
        await c.stop()


def database_url() -> str:
    """The stack's Postgres as a libpq URL."""
    return DatabaseSettings().libpq_url()


@asynccontextmanager
async def db() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection for test queries."""
    conn = await psycopg.AsyncConnection.connect(database_url(), autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def scalar(conn: psycopg.AsyncConnection[Any], sql: str, *params: Any) -> Any:
    """The first column of the first row of a query."""
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1
) -> bool:
    """Poll an async predicate until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
