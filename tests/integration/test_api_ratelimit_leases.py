"""The API's request limiter takes tokens from Redis in leases (`services.api.ratelimit`),
against a real redis-server: a busy key costs a handful of Redis calls rather than one a
request, a quiet key still takes one token at a time, and the limit holds across replicas.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from services.api.ratelimit import LEASE_S, RateLimiter, WhenDown

if TYPE_CHECKING:
    from llm_fixtures import RedisProc

pytest_plugins = ["llm_fixtures"]


async def _script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
    )


async def test_a_busy_key_costs_a_few_redis_calls_not_one_a_request(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    try:
        limiter = RateLimiter(redis, prefix=f"t{uuid.uuid4().hex[:8]}:")
        before = await _script_calls(redis)
        waits = [
            await limiter.acquire("tenant:busy", 100_000.0, 100_000, WhenDown.CLOSED)
            for _ in range(5000)
        ]
        calls = await _script_calls(redis) - before
    finally:
        await redis.aclose()
    assert waits == [0.0] * 5000
    # Leases grow with the key's demand: well under one call per 50 requests.
    assert calls < 100, calls


async def test_a_quiet_key_takes_one_token_at_a_time(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    try:
        limiter = RateLimiter(redis, prefix=prefix)
        for _ in range(5):
            assert await limiter.acquire("tenant:quiet", 100.0, 200, WhenDown.CLOSED) == 0.0
            await asyncio.sleep(LEASE_S * 1.5)  # each lease has expired before the next
        tokens = float(await redis.hget(f"{prefix}tenant:quiet", "tokens") or 0)
    finally:
        await redis.aclose()
    # Five requests took five tokens (refilled meanwhile up to the burst), not five leases.
    assert tokens >= 195, tokens


async def test_the_limit_holds_across_replicas_and_refusals_cost_no_call(
    llm_redis: RedisProc,
) -> None:
    redis = Redis.from_url(llm_redis.url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    rate, burst, seconds = 200.0, 50, 1.5
    try:
        replicas = [RateLimiter(redis, prefix=prefix) for _ in range(3)]
        granted = 0
        refused = 0
        before = await _script_calls(redis)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for limiter in replicas:
                for _ in range(20):
                    wait = await limiter.acquire("tenant:t", rate, burst, WhenDown.CLOSED)
                    if wait == 0.0:
                        granted += 1
                    else:
                        assert 0 < wait <= 1 / rate + 0.05
                        refused += 1
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        calls = await _script_calls(redis) - before
    finally:
        await redis.aclose()
    bound = burst + rate * elapsed
    assert granted <= bound, (granted, bound)
    # Expired leftovers are dropped, so a little under the bound; never much under.
    assert granted >= 0.7 * rate * elapsed, (granted, rate * elapsed)
    assert refused > granted
    assert calls < (granted + refused) / 4, (calls, granted, refused)


async def test_a_refusal_says_when_the_next_token_is_due(llm_redis: RedisProc) -> None:
    redis = Redis.from_url(llm_redis.url)
    try:
        limiter = RateLimiter(redis, prefix=f"t{uuid.uuid4().hex[:8]}:")
        waits = [await limiter.acquire("tenant:slow", 0.5, 3, WhenDown.CLOSED) for _ in range(5)]
    finally:
        await redis.aclose()
    assert waits[:3] == [0.0] * 3
    assert 1.5 < waits[3] <= 2.0 and 1.5 < waits[4] <= 2.0, waits


async def test_while_redis_is_down_a_crowd_waits_out_one_timeout_not_one_each(
    new_redis: object,
) -> None:
    server = new_redis()  # type: ignore[operator]
    redis = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        limiter = RateLimiter(redis, prefix=f"t{uuid.uuid4().hex[:8]}:")
        assert await limiter.acquire("tenant:t", 100.0, 200, WhenDown.OPEN) == 0.0
        server.stop()
        await asyncio.sleep(LEASE_S * 1.5)  # the lease has expired: the next asks Redis
        started = time.monotonic()
        waits = await asyncio.gather(
            *(limiter.acquire("tenant:t", 100.0, 200, WhenDown.OPEN) for _ in range(20))
        )
        elapsed = time.monotonic() - started
    finally:
        await redis.aclose()
    assert waits == [0.0] * 20  # reads pass while the limiter is down
    assert elapsed < 3.0, elapsed  # one failed ask answers them all (20 in turn: >= 10 s)
