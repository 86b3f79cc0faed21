"""The limiter's stale-slot rule (`RateLimiter.acquire`): a caller that wakes far behind
its slot queues again rather than bunch with the calls on time - but the time its ask
spent reaching Redis (the shared-script gate, the round trip) is not lateness: the slot
is reserved when the script runs, so its wait counts from the answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shared.llm.ratelimit import STATUS_GO, RateLimiter, Reservation
from shared.llm.settings import LLMSettings


class SlowRedis(RateLimiter):
    """A limiter whose every reservation answer takes `rtt_s` to arrive (a queue for the
    Redis gate, a loaded Redis) and grants a slot `wait_s` after the script ran."""

    def __init__(self, rtt_s: float, wait_s: float) -> None:
        super().__init__(None, LLMSettings(limiter_max_late_s=0.1))
        self.rtt_s, self.wait_s = rtt_s, wait_s
        self.asks = 0

    async def reserve(self, *args: Any, **kwargs: Any) -> Reservation:
        self.asks += 1
        await asyncio.sleep(self.rtt_s)
        return Reservation(STATUS_GO, self.wait_s)


async def test_a_slow_answer_from_redis_does_not_make_an_on_time_caller_stale() -> None:
    limiter = SlowRedis(rtt_s=0.2, wait_s=0.05)
    res = await limiter.acquire(
        LLMSettings().for_stage("insight"), 1, deadline=time.monotonic() + 10
    )
    assert limiter.asks == 1, "the answer's transit counted as lateness: the slot was wasted"
    assert res.waited_s == pytest.approx(0.25, abs=0.1)


async def test_a_caller_that_oversleeps_its_slot_queues_again() -> None:
    limiter = SlowRedis(rtt_s=0.0, wait_s=0.01)
    real_sleep = asyncio.sleep

    async def starved(delay: float) -> None:  # the event loop wakes us 0.3 s late
        await real_sleep(delay + 0.3)

    cfg = LLMSettings().for_stage("insight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("shared.llm.ratelimit.asyncio.sleep", starved)
        await limiter.acquire(cfg, 1, deadline=time.monotonic() + 10)
    assert limiter.asks == 3  # two stale slots given up, then it sends anyway
