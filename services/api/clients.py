"""The API's connections (Postgres, Redis, Kafka), opened in the app's lifespan.

`Clients.open(settings)` builds them all and `close()` releases them; routes reach them
only through the dependencies in `deps`. The Kafka producer starts in the background and
keeps retrying, so the API can create and read jobs while Kafka is briefly away; uploads
answer 503 until it is connected, and `/ready` says which dependency is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.lru import LRU
from shared.settings import KafkaSettings
from shared.topics import REVIEWS_SUBMITTED

from .auth import KeyCache
from .cache import StatusCache
from .coalesce import Coalescer
from .invalidation import Invalidations
from .ratelimit import RateLimiter
from .settings import ApiSettings
from .store import JobRow, NewJob, insert_jobs

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """The producer is not connected (yet); the request should be retried (HTTP 503)."""


class EventProducer:
    """An idempotent, acks=all producer, (re)started in the background until Kafka answers."""

    def __init__(self, settings: KafkaSettings, retry_s: float = 2.0) -> None:
        self.settings = settings
        self.retry_s = retry_s
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin connecting; returns at once."""
        self._starter = asyncio.create_task(self._connect(), name="kafka-producer-start")

    async def wait_started(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the connection; whether it is up."""
        if self._starter is not None and not self._starter.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starter), timeout_s)
        return self._producer is not None

    async def _connect(self) -> None:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                max_request_size=8 * 1024 * 1024,
                request_timeout_ms=15_000,
                client_id="voc-api",
            )
            try:
                await producer.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                log.warning(
                    "kafka producer not connected, retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": self.retry_s},
                )
                await asyncio.sleep(self.retry_s)
                continue
            self._producer = producer
            log.info("kafka producer connected")
            return

    @property
    def producer(self) -> AIOKafkaProducer:
        """The connected producer; raises `KafkaUnavailable` before it connected."""
        if self._producer is None:
            raise KafkaUnavailable("Kafka is not reachable yet")
        return self._producer

    async def check(self) -> None:
        """Raise unless the cluster answers a metadata request listing the submitted topic."""
        producer = self.producer
        topic = REVIEWS_SUBMITTED.full_name(self.settings.topic_prefix)
        partitions = await producer.partitions_for(topic)
        if not partitions:
            raise KafkaUnavailable(f"topic {topic} has no partitions")

    async def stop(self) -> None:
        """Stop connecting, flush and close the producer."""
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


@dataclass
class Clients:
    """Everything a request may touch, built once per app from its settings."""

    settings: ApiSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    kafka: EventProducer
    keys: KeyCache
    # client address -> monotonic time its unknown-key budget allows a lookup again
    lookup_blocks: LRU[str, float]
    invalidations: Invalidations
    limiter: RateLimiter
    status_cache: StatusCache
    # Job creations of concurrent requests, one INSERT per batch (group commit).
    job_inserts: Coalescer[NewJob, JobRow]

    @classmethod
    def open(cls, settings: ApiSettings) -> Clients:
        """Create the clients; connections are made lazily (Kafka in the background)."""
        # Every write of the API is one statement, so autocommit: no BEGIN/COMMIT round
        # trips on the hot paths (job creation is a single INSERT).
        # The pool holds as many connections as requests are in flight at ~2,000/s: an
        # overflow connection is opened and closed per checkout, a Postgres backend fork
        # per request. In autocommit there is nothing to roll back when one is returned.
        engine = create_async_engine(
            settings.db.sqlalchemy_url(),
            pool_size=max(2, settings.db.pool_size, settings.db_pool_size),
            max_overflow=settings.db_max_overflow,
            pool_recycle=1800,
            pool_reset_on_return=None,
            isolation_level="AUTOCOMMIT",
        )
        redis = Redis.from_url(
            settings.redis.url.get_secret_value(),
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
        )
        kafka = EventProducer(settings.kafka)
        kafka.start()
        keys = KeyCache(
            ttl_s=settings.key_cache_ttl_s,
            max_entries=settings.key_cache_entries,
            max_unknown=settings.unknown_key_entries,
        )
        status_cache = StatusCache(
            redis, ttl_s=settings.status_ttl_s, final_ttl_s=settings.status_final_ttl_s
        )
        invalidations = Invalidations(redis, keys, status_cache)
        invalidations.start()
        return cls(
            settings=settings,
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            redis=redis,
            kafka=kafka,
            keys=keys,
            lookup_blocks=LRU(max_entries=settings.unknown_key_entries),
            invalidations=invalidations,
            limiter=RateLimiter(redis),
            status_cache=status_cache,
            job_inserts=Coalescer("jobs", lambda jobs: insert_jobs(engine, jobs)),
        )

    async def close(self) -> None:
        """Release every connection."""
        await self.invalidations.stop()
        await self.kafka.stop()
        await self.redis.aclose()
        await self.engine.dispose()
