"""The status cache's in-memory layer (`services.api.cache`, `services.api.invalidation`)
against a real redis-server: a replica serves what Redis holds, drops its copy as soon as
any process changes the job, reads Redis while its subscription is down, and a crowd of
pollers missing at once costs one load.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from services.api.auth import KeyCache
from services.api.cache import StatusCache
from services.api.invalidation import Invalidations
from shared.jobstatus import forget_status, status_cache_key

if TYPE_CHECKING:
    from llm_fixtures import RedisProc

pytest_plugins = ["llm_fixtures"]


async def _replica(redis: Redis) -> tuple[StatusCache, Invalidations]:
    cache = StatusCache(redis, ttl_s=1.0, final_ttl_s=300.0)
    subscription = Invalidations(redis, KeyCache(), cache)
    subscription.start()
    await asyncio.wait_for(subscription.subscribed.wait(), 10)
    return cache, subscription


async def _eventually(check: object, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_change_anywhere_drops_every_replicas_copy(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    tenant, job = f"t-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    a, sub_a = await _replica(redis)
    b, sub_b = await _replica(redis)
    try:
        await a.put(tenant, job, "completed", b"v1")
        assert await b.get(tenant, job) == b"v1"  # read from Redis, kept in b's memory
        # Redis changes behind b's back; b still answers from memory (no round trip) ...
        await redis.set(status_cache_key(tenant, job), b"v2", px=300_000)
        assert await b.get(tenant, job) == b"v1"
        # ... until a process that changed the job says so (the report stage, replay).
        await forget_status(redis, tenant, job)
        assert await _eventually(lambda: b._local.lookup(status_cache_key(tenant, job))[0] is False)
        assert await b.get(tenant, job) is None
        # The API's own invalidation reaches the other replica too.
        await a.put(tenant, job, "completed", b"v3")
        assert await b.get(tenant, job) == b"v3"
        await a.invalidate(tenant, job)
        assert await _eventually(lambda: b._local.lookup(status_cache_key(tenant, job))[0] is False)
    finally:
        await sub_a.stop()
        await sub_b.stop()
        await redis.aclose()


async def test_a_copy_lives_no_longer_than_its_redis_key(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    tenant, job = f"t-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    cache, sub = await _replica(redis)
    try:
        await redis.set(status_cache_key(tenant, job), b"running", px=300)
        assert await cache.get(tenant, job) == b"running"
        await asyncio.sleep(0.4)
        assert await cache.get(tenant, job) is None
    finally:
        await sub.stop()
        await redis.aclose()


async def test_without_the_subscription_every_read_asks_redis(new_redis: object) -> None:
    server = new_redis()  # type: ignore[operator]
    redis = Redis.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    tenant, job = f"t-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    cache, sub = await _replica(redis)
    try:
        await cache.put(tenant, job, "completed", b"v1")
        assert await cache.get(tenant, job) == b"v1"
        server.stop()
        assert await _eventually(lambda: not sub.subscribed.is_set(), 10)
        # Changes may be missed now: nothing is served from memory.
        assert await cache.get(tenant, job) is None
        server.start()
        assert await _eventually(sub.subscribed.is_set, 15)
        assert await cache.get(tenant, job) is None  # the restarted Redis is empty
    finally:
        await sub.stop()
        await redis.aclose()


async def test_a_crowd_of_misses_costs_one_load(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    tenant, job = f"t-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    cache, sub = await _replica(redis)
    loads = 0

    async def load() -> tuple[str, bytes]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.2)  # a dozen COUNTs
        return "receiving", b"doc"

    try:
        answers = await asyncio.gather(*(cache.get_or_load(tenant, job, load) for _ in range(50)))
    finally:
        await sub.stop()
        await redis.aclose()
    assert answers == [b"doc"] * 50
    assert loads == 1


async def test_a_cancelled_loader_does_not_fail_the_others(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    tenant, job = f"t-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    cache, sub = await _replica(redis)

    async def load() -> tuple[str, bytes]:
        await asyncio.sleep(0.2)
        return "receiving", b"doc"

    try:
        first = asyncio.create_task(cache.get_or_load(tenant, job, load))
        await asyncio.sleep(0.05)
        others = [asyncio.create_task(cache.get_or_load(tenant, job, load)) for _ in range(5)]
        await asyncio.sleep(0.05)
        first.cancel()  # its client went away
        answers = await asyncio.gather(*others)
    finally:
        await sub.stop()
        await redis.aclose()
    assert answers == [b"doc"] * 5
