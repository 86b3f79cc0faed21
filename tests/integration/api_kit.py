"""Helpers of the API integration tests: an in-process app on the real stack, keys, topics.

The app is built by `create_app` from the stack's environment with a random topic prefix
(only its `reviews.submitted` topic is created), so the produced chunks can be read back
without the stack's ingest service consuming or mixing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from fastapi import FastAPI

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.auth import create_api_key_sync
from shared.events import ReviewsSubmitted
from shared.topics import REVIEWS_SUBMITTED


def database_url() -> str:
    """The stack's Postgres."""
    return os.environ["DATABASE_URL"]


def bootstrap() -> str:
    """The stack's Kafka."""
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


def new_key(tenant: str | None = None) -> tuple[str, str]:
    """A fresh tenant (random unless named) and an API key of it."""
    tenant = tenant or f"apitest-{uuid.uuid4().hex[:12]}"
    return tenant, create_api_key_sync(database_url(), tenant)


def auth(key: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {key}"}


async def create_submitted_topic(prefix: str, partitions: int = 3) -> str:
    """Create `<prefix>reviews.submitted` and wait until it has leaders; returns its name."""
    topic = REVIEWS_SUBMITTED.full_name(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    return topic


async def delete_topic(topic: str) -> None:
    """Remove a test topic (best effort)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        with contextlib.suppress(Exception):  # cleanup only: a leftover topic harms nothing
            await admin.delete_topics([topic])
    finally:
        await admin.close()


def app_settings(prefix: str, **overrides: Any) -> ApiSettings:
    """ApiSettings from the environment, with a topic prefix and overrides."""
    base = ApiSettings()
    kafka = base.kafka.model_copy(update={"topic_prefix": prefix})
    return base.model_copy(update={"kafka": kafka, **overrides})


@asynccontextmanager
async def running_app(settings: ApiSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running, and an in-process client of it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if not await app.state.clients.kafka.wait_started(30):
            raise RuntimeError("the API's Kafka producer did not connect")
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield app, client


async def read_chunks(
    topic: str, upload_id: str, expected: int, timeout: float = 30.0
) -> list[ReviewsSubmitted]:
    """The chunks of one upload on `topic` (from the beginning), ordered by chunk number."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: dict[int, ReviewsSubmitted] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    event = ReviewsSubmitted.model_validate_json(rec.value or b"")
                    if event.upload_id == upload_id:
                        assert rec.key == (
                            f"{event.job_id}:{event.upload_id}:{event.chunk_no}".encode()
                        )
                        found[event.chunk_no] = event
        return [found[n] for n in sorted(found)]
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} not found")


async def topic_messages(topic: str) -> int:
    """How many records `topic` holds (sum of end offsets; nothing is compacted here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()
