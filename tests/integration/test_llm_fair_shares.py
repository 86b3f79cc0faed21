"""The limiter's fairness shares against a real Redis: tenants, not jobs, divide the
quota, and a heavy share weighs less beside a light one (`shared.llm.ratelimit`).

The reservations are asked of the real script with a rate of one call a second and a
100 s horizon, so none of them goes (and leaves the outstanding set) while a test runs:
the caps each share gets are exact.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from shared.llm.ratelimit import STATUS_GO, STATUS_WAIT_TURN, RateLimiter, Reservation
from shared.llm.settings import LLMSettings, StageConfig

if TYPE_CHECKING:
    from llm_fixtures import RedisProc

pytest_plugins = ["llm_fixtures"]

MAX_WAIT_S = 1000.0


def _settings(**kw: float) -> LLMSettings:
    values: dict[str, float] = {
        "rps": 1.0,
        "limiter_horizon_s": 100.0,
        "limiter_active_window_s": 600.0,
        "limiter_usage_half_life_s": 3600.0,
        "limiter_free_calls": 5.0,
        "limiter_heavy_weight": 0.25,
    }
    values.update(kw)
    return LLMSettings(key_prefix=f"t{uuid.uuid4().hex[:8]}", stages={}, **values)  # type: ignore[arg-type]


async def _reserve_until_turn(
    limiter: RateLimiter, cfg: StageConfig, job: str, most: int
) -> list[Reservation]:
    """Reserve for `job` until the limiter says wait (or `most` grants)."""
    got: list[Reservation] = []
    for _ in range(most):
        res = await limiter.reserve(cfg, 1, job, MAX_WAIT_S)
        got.append(res)
        if res.status != STATUS_GO:
            break
    return got


async def test_a_tenants_many_jobs_are_one_share(llm_redis: RedisProc) -> None:
    settings = _settings(limiter_free_calls=1e9)  # nobody heavy: equal shares
    tenants = {f"a-{i}": "tenant-a" for i in range(10)} | {"b-0": "tenant-b"}

    async def share_of(job_id: str) -> str | None:
        return tenants.get(job_id)

    redis = Redis.from_url(llm_redis.url)
    try:
        limiter = RateLimiter(redis, settings, share_of=share_of)
        cfg = settings.for_stage("insight")
        for job in tenants:
            res = await limiter.reserve(cfg, 1, job, MAX_WAIT_S)
            assert res.status == STATUS_GO
        # eleven jobs, two tenants: each tenant may queue half of the 100 s horizon
        assert res.n_active == 2
        assert res.cap == 50
        # tenant A's ten jobs together hold its half: 9 queued (a-0 went at once), 41
        # more, then wait
        grants = await _reserve_until_turn(limiter, cfg, "a-3", 100)
        assert [r.status for r in grants].count(STATUS_GO) == 41
        assert grants[-1].status == STATUS_WAIT_TURN
        # while tenant B still has its own half
        assert (await limiter.reserve(cfg, 1, "b-0", MAX_WAIT_S)).status == STATUS_GO
        # a job nobody can place (unknown, or the lookup failed) is its own share
        res = await limiter.reserve(cfg, 1, "stray-job", MAX_WAIT_S)
        assert res.status == STATUS_GO and res.n_active == 3
    finally:
        await redis.aclose()


async def test_a_heavy_share_yields_most_of_the_queue_to_a_light_one(
    llm_redis: RedisProc,
) -> None:
    settings = _settings()
    redis = Redis.from_url(llm_redis.url)
    try:
        limiter = RateLimiter(redis, settings)
        cfg = settings.for_stage("insight")
        # A alone: heavy after its 5 free calls, yet it may fill the whole horizon
        alone = await _reserve_until_turn(limiter, cfg, "big", 10)
        assert all(r.status == STATUS_GO for r in alone)
        assert alone[-1].n_heavy == 1 and alone[-1].cap == 100
        # B arrives light: 1 / (1 + 0.25) of the horizon is its part, 0.25 / 1.25 A's
        first = await limiter.reserve(cfg, 1, "small", MAX_WAIT_S)
        assert first.status == STATUS_GO
        assert (first.n_active, first.n_heavy, first.cap) == (2, 1, 80)
        # A holds 9 queued (its first went at once) and may take 11 more; then it waits
        # for its own reservations to go
        more = await _reserve_until_turn(limiter, cfg, "big", 100)
        assert [r.status for r in more].count(STATUS_GO) == 11
        assert more[-1].status == STATUS_WAIT_TURN and more[-1].cap == 20
        # B is light while its calls are within the 5 free ones, heavy past them
        light = await _reserve_until_turn(limiter, cfg, "small", 5)
        assert all(r.status == STATUS_GO and r.cap == 80 for r in light)
        heavy = await limiter.reserve(cfg, 1, "small", MAX_WAIT_S)
        assert (heavy.n_heavy, heavy.cap) == (2, 50)
    finally:
        await redis.aclose()


async def test_a_share_over_its_part_borrows_what_a_quiet_share_leaves(
    llm_redis: RedisProc,
) -> None:
    # As above, but a share over its part may still reserve while less than 30 s (30
    # calls at 1/s) of the schedule is queued: B is active yet asks for nothing more, so
    # its part would otherwise stay unused while A waits.
    settings = _settings(limiter_borrow_s=30.0)
    redis = Redis.from_url(llm_redis.url)
    try:
        limiter = RateLimiter(redis, settings)
        cfg = settings.for_stage("insight")
        alone = await _reserve_until_turn(limiter, cfg, "big", 10)
        assert all(r.status == STATUS_GO for r in alone)
        first = await limiter.reserve(cfg, 1, "small", MAX_WAIT_S)
        assert (first.status, first.cap) == (STATUS_GO, 80)
        # A's part (20) and then what B leaves, until 30 calls are scheduled ahead
        more = await _reserve_until_turn(limiter, cfg, "big", 100)
        granted = [r.status for r in more].count(STATUS_GO)
        assert 19 <= granted <= 20, granted
        assert more[-1].status == STATUS_WAIT_TURN and more[-1].cap == 20
        # its waiters wake when the schedule is short enough to borrow again (in about a
        # second), not when its own reservations have gone below its part (~20 s)
        assert more[-1].wait_s < 2.0
        # and B, asking again, still has its part
        assert (await limiter.reserve(cfg, 1, "small", MAX_WAIT_S)).status == STATUS_GO
    finally:
        await redis.aclose()


async def test_usage_decays_so_a_heavy_share_becomes_light_again(
    llm_redis: RedisProc,
) -> None:
    settings = _settings(limiter_usage_half_life_s=0.2)
    redis = Redis.from_url(llm_redis.url)
    try:
        limiter = RateLimiter(redis, settings)
        cfg = settings.for_stage("insight")
        burst = await _reserve_until_turn(limiter, cfg, "big", 8)
        assert burst[-1].n_heavy == 1
        # 8 calls halve to below the 5 free ones in well under two seconds
        await asyncio.sleep(2.0)
        assert (await limiter.reserve(cfg, 1, "big", MAX_WAIT_S)).n_heavy == 0
    finally:
        await redis.aclose()
