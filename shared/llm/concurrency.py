"""The shared LLM concurrency cap: at most N calls in flight per provider+model, across
every process and replica, kept in Redis beside the token bucket (`ratelimit.py`).

Self-hosted servers (llama.cpp, vLLM, Ollama) are bounded by how many requests they
generate at once, not by requests per second: llama.cpp with one slot answers one call
and queues the rest, so 25 calls sent together mostly time out in its queue, are retried,
and the server keeps generating for clients that are gone. With a cap the queue is ours,
where waiting costs nothing and is bounded by the call's deadline.

How it works (the Lua script `concurrency.lua` beside this file does one atomic step):

- **Leases.** Holders are a sorted set of holder ids scored by lease expiry on the Redis
  clock. A caller takes a slot when fewer than `limit` unexpired holders exist and it is
  at the head of the queue; while its call runs it renews the lease every third of
  `VOC_LLM_CONCURRENCY_LEASE_S`. A killed holder stops renewing, and its slot comes back
  when the lease expires - no one has to clean up after it.
- **FIFO.** Waiters queue in arrival order (a second sorted set), each with a short lease
  of its own, so a killed waiter leaves the queue too. A waiter asks again every
  `VOC_LLM_CONCURRENCY_POLL_S` at most; a slot released in the same process wakes that
  process's waiters at once.
- **Deadline.** No slot before the call's deadline raises `LLMRateLimited` (retryable:
  the stage tries the record again later) after leaving the queue.
- **Redis down.** Each process falls back to a local cap of
  `max(1, floor(limit * VOC_LLM_FALLBACK_FRACTION))` calls per key - the same fraction the
  rate limiter's fallback gives each process, i.e. it assumes about 1/fraction replicas -
  logged once per outage; Redis is asked again every second and used as soon as it
  answers. The local cap counts every call of the process, also those that still hold a
  shared slot from before the outage, so the process never exceeds it.

`limit <= 0` means no cap: `hold` then costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from shared.backoff import capped_exponential
from shared.llm.errors import LLMRateLimited
from shared.llm.metrics import LLMMetrics
from shared.llm.settings import LLMSettings, StageConfig
from shared.llm.shared_script import SharedScript

log = logging.getLogger(__name__)

# The first re-asks come quickly (a slot often frees within milliseconds under load),
# then back off to the configured poll interval.
FIRST_POLL_S = 0.02


def fallback_slots(limit: int, fraction: float) -> int:
    """Slots one process may use while Redis is unreachable (at least one)."""
    return max(1, math.floor(limit * fraction))


def waiter_lease_ms(poll_s: float) -> int:
    """How long a waiter keeps its place in the queue without asking again."""
    return int((3 * poll_s + 2.0) * 1000)


class ConcurrencyLimiter:
    """The shared cap. Built with a Redis client (or None: a local cap only)."""

    def __init__(
        self,
        redis: Redis | None,
        settings: LLMSettings,
        metrics: LLMMetrics | None = None,
        *,
        gate: asyncio.Semaphore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._shared = SharedScript(
            redis,
            "concurrency.lua",
            gate=gate or asyncio.Semaphore(settings.redis_max_concurrency),
            timeout_s=settings.redis_timeout_s,
            what="llm concurrency cap",
            fallback=f"each process now allows {settings.fallback_fraction:.0%} of the cap",
            resumed="shared cap resumed",
            gauge=metrics.concurrency_fallback if metrics else None,
        )
        self._held: dict[str, int] = {}  # this process's calls holding a slot, per key
        self._freed: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def degraded(self) -> bool:
        """True while the cap runs on its local fallback."""
        return self._shared.down

    def _keys(self, limit_key: str) -> list[str]:
        tag = "{" + f"{self._settings.key_prefix}:cc:{limit_key}" + "}"
        return [f"{tag}:h", f"{tag}:q", f"{tag}:qx"]

    async def _eval(self, limit_key: str, args: list[Any]) -> list[int] | None:
        """Run one script step; None (and fallback mode) while Redis is unreachable."""
        return await self._shared.run(self._keys(limit_key), args)

    @contextlib.asynccontextmanager
    async def hold(self, cfg: StageConfig, deadline: float) -> AsyncIterator[None]:
        """Hold one of `cfg`'s provider+model slots for the body (see the module docstring).

        `deadline` is a `time.monotonic()` instant; no slot by then raises `LLMRateLimited`.
        """
        limit = cfg.max_concurrency
        if limit <= 0:
            yield
            return
        key = cfg.limit_key
        start = time.monotonic()
        holder = uuid.uuid4().hex
        shared = await self._acquire(cfg, holder, deadline)
        self._held[key] = self._held.get(key, 0) + 1
        if self._metrics:
            self._metrics.concurrency_wait.labels(cfg.stage, cfg.model).observe(
                time.monotonic() - start
            )
            self._metrics.inflight.labels(cfg.stage, cfg.model).inc()
        renew = asyncio.create_task(self._renew(cfg, holder)) if shared else None
        try:
            yield
        finally:
            self._held[key] -= 1
            if self._metrics:
                self._metrics.inflight.labels(cfg.stage, cfg.model).dec()
            if renew is not None:
                renew.cancel()
                # Releasing must not be lost to a cancellation of this task (a shutdown,
                # an abandoned call): it runs on in the background, awaited when possible.
                task = self._spawn(self._release(key, holder))
                self._wake(key)  # waiters on the local fallback count `_held`: go now
                await asyncio.shield(task)
            self._wake(key)

    async def _acquire(self, cfg: StageConfig, holder: str, deadline: float) -> bool:
        """Wait for a slot: True for a shared one, False for one of the local fallback."""
        s = self._settings
        lease_ms = int(s.concurrency_lease_s * 1000)
        polls = 0
        try:
            while True:
                res = await self._eval(
                    cfg.limit_key,
                    [
                        "acquire",
                        holder,
                        cfg.max_concurrency,
                        lease_ms,
                        waiter_lease_ms(s.concurrency_poll_s),
                    ],
                )
                if res is None:
                    await self._acquire_local(cfg, deadline)
                    return False
                if res[0] == 1:
                    return True
                now = time.monotonic()
                if now >= deadline:
                    raise LLMRateLimited(
                        f"concurrency cap: no free slot of {cfg.max_concurrency} before the "
                        f"deadline (place {res[1]} in the queue)",
                        stage=cfg.stage,
                        retry_after=s.concurrency_poll_s,
                    )
                polls += 1
                pause = capped_exponential(polls, FIRST_POLL_S, s.concurrency_poll_s)
                pause *= self._rng.uniform(0.5, 1.0)
                await self._wait_freed(cfg.limit_key, min(pause, deadline - now))
        except BaseException:
            # Leave the queue at once rather than holding up the waiters behind us until
            # our place expires (also on cancellation: in the background).
            self._spawn(self._release(cfg.limit_key, holder))
            raise

    async def _acquire_local(self, cfg: StageConfig, deadline: float) -> None:
        """Wait until this process holds fewer calls of the key than its fallback share."""
        key = cfg.limit_key
        slots = fallback_slots(cfg.max_concurrency, self._settings.fallback_fraction)
        while self._held.get(key, 0) >= slots:
            now = time.monotonic()
            if now >= deadline:
                raise LLMRateLimited(
                    "concurrency cap (local fallback): no free slot before the deadline",
                    stage=cfg.stage,
                    retry_after=self._settings.concurrency_poll_s,
                )
            await self._wait_freed(key, min(self._settings.concurrency_poll_s, deadline - now))

    async def _renew(self, cfg: StageConfig, holder: str) -> None:
        """Keep the lease alive while the call runs."""
        lease_s = self._settings.concurrency_lease_s
        lease_ms = int(lease_s * 1000)
        while True:
            await asyncio.sleep(lease_s / 3)
            res = await self._eval(cfg.limit_key, ["renew", holder, lease_ms])
            if res is not None and res[0] == 0:
                # The lease expired (a stall longer than a lease, or Redis lost it): the
                # call goes on, but someone else may hold the slot now.
                log.warning("llm concurrency cap: lease of a running %s call lost", cfg.stage)
                return

    async def _release(self, limit_key: str, holder: str) -> None:
        await self._eval(limit_key, ["release", holder])

    async def _wait_freed(self, limit_key: str, timeout: float) -> None:
        """Sleep up to `timeout`, or until a slot of `limit_key` is freed in this process."""
        event = self._freed.setdefault(limit_key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, timeout))

    def _wake(self, limit_key: str) -> None:
        event = self._freed.pop(limit_key, None)
        if event is not None:
            event.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
