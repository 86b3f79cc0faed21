"""Helpers of the tests that run stage handlers in the test process against the real stack.

`RunnerSink` writes a handler's `StageResult` the way the stage runner does (rows upserted
in one transaction, then the events produced and acknowledged, then the cleanup actions in
one more transaction), so two handler instances in one test behave like two replicas of a
stage. `FakeLLM` talks to the test stack's fake LLM server (its admin config and its
request counters), which the handlers themselves call through the real `openai` client.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from ingest_kit import producer

from shared.db.pool import ConnectionPool
from shared.db.upsert import upsert
from shared.settings import DatabaseSettings
from shared.stage import StageResult


@contextmanager
def service_stopped(stack: Any, name: str) -> Iterator[None]:
    """The stack's service `name` stopped for the block (and started again if it ran)."""
    running = stack.service_pid(name) is not None
    if running:
        stack.stop_service(name)
    try:
        yield
    finally:
        if running:
            stack.start_service(name)


class RunnerSink:
    """Sinks results in the runner's order: upsert, produce (acks=all), clean up."""

    def __init__(self, pool: ConnectionPool, kafka: AIOKafkaProducer) -> None:
        self.pool = pool
        self.kafka = kafka

    async def __call__(self, result: StageResult) -> None:
        """Write one result; dead letters are not expected here (they fail the test)."""
        assert not result.dead_letters, result.dead_letters
        if any(rows for _, rows in result.upserts):
            async with self.pool.connection() as conn:
                for spec, rows in result.upserts:
                    if rows:
                        await upsert(conn, spec, rows)
                await conn.commit()
        futures = [
            await self.kafka.send(e.topic, e.value, key=e.key, headers=list(e.headers) or None)
            for e in result.events
        ]
        if futures:
            await asyncio.gather(*futures)
        if result.cleanup:
            async with self.pool.connection() as conn:
                for action in result.cleanup:
                    await action(conn)
                await conn.commit()


@asynccontextmanager
async def pools(n: int, size: int = 4) -> AsyncIterator[list[ConnectionPool]]:
    """`n` separate connection pools: one per simulated replica."""
    opened: list[ConnectionPool] = []
    try:
        for _ in range(n):
            pool = ConnectionPool(DatabaseSettings().libpq_url(), size=size)
            await pool.open()
            opened.append(pool)
        yield opened
    finally:
        for pool in opened:
            await pool.close()


@asynccontextmanager
async def sink_for(pool: ConnectionPool) -> AsyncIterator[RunnerSink]:
    """A `RunnerSink` on `pool` with its own producer."""
    async with producer() as kafka:
        yield RunnerSink(pool, kafka)


class FakeLLM:
    """The stack's fake LLM server: configure faults and latency, read request counters."""

    def __init__(self) -> None:
        url = os.environ.get("VOC_FAKE_LLM_URL")
        assert url, "the test stack runs without the fake LLM"
        self.url = url.rstrip("/")

    async def requests(self, stage: str) -> int:
        """Requests the server received for `stage` so far (counted on arrival)."""
        # Async: a blocking call would stall the handlers sharing this event loop.
        async with httpx.AsyncClient(timeout=10) as client:
            stats = (await client.get(f"{self.url}/stats")).json()
        return int(stats.get("by_stage", {}).get(stage, {}).get("requests", 0))

    async def configure(self, **patch: Any) -> None:
        """Change the server's config (`latency_ms="2000"`, `error_rate=1.0`, ...)."""
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(f"{self.url}/admin/config", json=patch)
        assert resp.status_code == 200, resp.text

    @asynccontextmanager
    async def configured(self, **patch: Any) -> AsyncIterator[FakeLLM]:
        """The config changed for the block, then set back to no latency and no faults."""
        await self.configure(**patch)
        try:
            yield self
        finally:
            await self.configure(
                latency_ms="0",
                error_rate=0.0,
                timeout_rate=0.0,
                malformed_rate=0.0,
                fault_match=None,
                fault_stages=None,
            )

    async def wait_request(self, stage: str, after: int, timeout: float = 30.0) -> None:
        """Wait until more than `after` requests of `stage` have arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.requests(stage) <= after:
            assert loop.time() < deadline, f"no {stage} request reached the fake LLM"
            await asyncio.sleep(0.1)
