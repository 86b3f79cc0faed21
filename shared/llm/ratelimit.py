"""The shared LLM rate limiter: one quota for every process and replica, kept in Redis.

How it works (the Lua script `ratelimit.lua` beside this file does one atomic step):

- **Reservations, not polling (GCRA).** Each provider/model key has a theoretical arrival
  time (TAT) for requests and one for tokens. A caller asks once; the script reserves the
  earliest instant at which both the requests/s bucket and the tokens/min bucket allow
  the call, advances the TATs and returns the wait. The caller sleeps exactly that long
  and goes. Waits come from the Redis clock, so callers' clocks never matter.
- **Tokens.** A call's token cost is estimated before it (prompt size + expected answer)
  and corrected afterwards from the provider's `usage` (`adjust`).
- **429s.** A provider 429 shrinks the effective rate for everyone (x `penalty_factor`,
  0.75) for the `Retry-After` window (at least 0.25 s); 429s in later windows shrink it
  further, down to `penalty_min_factor` - `penalize`. A response whose
  `x-ratelimit-remaining-requests` is 0 makes everyone wait for one request's refill
  (`reset / (limit - remaining)`) - `hold`.
- **Fairness.** Reservations may reach at most `horizon` seconds ahead in total, and that
  horizon is divided among the *shares* active in the last few seconds. A share is the
  unit of fairness: the job's tenant when the limiter is given `share_of` (the stages
  resolve it from Postgres), else the job, so a tenant with a thousand jobs weighs as
  much as one with one. A share may hold at most its part of `horizon * rate`
  outstanding reservations; over it, it gets a wake-up ticket (spaced by its part of the
  rate, so its callers do not stampede) instead of a reservation, so a huge job can never
  queue a small one out. Parts are weighted: a share whose granted calls (decayed with a
  half-life, `limiter_usage_half_life_s`) exceed `limiter_free_calls` is *heavy* and
  weighs `limiter_heavy_weight` (0.2) beside a light share's 1, so a small job beside a
  huge one gets most of the rate rather than half (queues hold at most their share, so by
  Little's law the rates divide as the parts do; `fair_cap`). A heavy share alone still
  gets the whole rate. The parts bind only while the schedule is long: a share over its
  part may still reserve while less than `limiter_borrow_s` of reservations is queued,
  so the rate a quiet but active share leaves (a stage asking in bursts, a job between
  phases) goes to whoever asks, at the cost of that much more wait for the quiet one's
  next call.
- **Stale slots.** A caller that wakes up more than `limiter_max_late_s` after its slot
  (a starved CPU, a GC pause) does not send - that would bunch with the calls that are on
  time - but queues again (at most twice).
- **Redis down.** Calls fall back to an in-process limit of `fallback_fraction` of the
  rate, logged once per outage; Redis is probed again every second and used as soon as
  it answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.llm.errors import LLMRateLimited
from shared.llm.metrics import LLMMetrics
from shared.llm.settings import LLMSettings, StageConfig
from shared.llm.shared_script import SharedScript

log = logging.getLogger(__name__)

DEFAULT_JOB = "_"
MAX_STALE_SLOTS = 2
# A Retry-After shorter than this still slows everyone down for this long.
PENALTY_MIN_WINDOW_S = 0.25

STATUS_GO = 0
STATUS_WAIT_TURN = 1
STATUS_TOO_LATE = 2


def gcra_conform_at(tat: float, now: float, cost: float, interval: float, burst: float) -> float:
    """When a request of `cost` units conforms to a GCRA bucket (never before `now`).

    `tat` is the bucket's theoretical arrival time, `interval` seconds per unit (1/rate)
    and `burst` the bucket depth in units. A request conforms at
    `tat + (min(cost, burst) - burst) * interval`: a cost larger than the bucket waits
    for a full bucket and then overdraws it.
    """
    return max(now, tat + (min(cost, burst) - burst) * interval)


def gcra_advance(tat: float, go: float, cost: float, interval: float) -> float:
    """The bucket's new TAT after a request of `cost` units went at `go`."""
    return max(tat, go) + cost * interval


def gcra_reserve(
    tat: float, now: float, cost: float, interval: float, burst: float
) -> tuple[float, float]:
    """One GCRA step on one bucket: (go, new_tat)."""
    go = gcra_conform_at(tat, now, cost, interval, burst)
    return go, gcra_advance(tat, go, cost, interval)


def fair_cap(
    horizon_s: float,
    rate: float,
    n_active: int,
    *,
    n_heavy: int = 0,
    heavy: bool = False,
    heavy_weight: float = 1.0,
) -> int:
    """How many outstanding reservations one of `n_active` shares may hold, `n_heavy` of
    them heavy (weighing `heavy_weight` beside a light share's 1); `heavy` says which
    kind this one is."""
    n = max(1, n_active)
    n_heavy = min(n_heavy, n)
    total = (n - n_heavy) + n_heavy * heavy_weight
    weight = heavy_weight if heavy else 1.0
    return max(1, math.floor(horizon_s * rate * weight / total))


def decayed_usage(used: float, used_at: float, now: float, half_life_s: float) -> float:
    """A share's granted calls `used` (as of `used_at`), halved every `half_life_s`."""
    if now <= used_at:
        return used
    return float(used * 2 ** (-(now - used_at) / half_life_s))


def estimate_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """A cheap upper-ish estimate of a call's tokens: ~3 characters per prompt token,
    plus an answer as long as the prompt (bounded by `max_tokens`)."""
    chars = sum(len(m.get("content") or "") for m in messages)
    prompt = chars // 3 + 4 * len(messages)
    return prompt + min(max_tokens, max(64, prompt))


@dataclass(frozen=True)
class Reservation:
    """The limiter's answer: go after `wait_s` (status 0), ask again after `wait_s`
    (1), or the wait would pass the caller's deadline (2).

    `go_at` is the granted instant on the Redis clock (epoch seconds; 0 for the local
    fallback), `waited_s` what `acquire` actually waited in total, `n_active` and
    `n_heavy` the shares active and heavy when it was asked, `cap` this share's part.
    """

    status: int
    wait_s: float
    n_active: int = 1
    cap: int = 0
    local: bool = False
    go_at: float = 0.0
    waited_s: float = 0.0
    n_heavy: int = 0


class LocalLimiter:
    """The in-process fallback: the same GCRA arithmetic on the local monotonic clock."""

    def __init__(self) -> None:
        self._tat: dict[tuple[str, str], float] = {}

    def reserve(
        self, key: str, *, rps: float, burst: int, tps: float, token_burst: float, cost: float
    ) -> float:
        """Reserve a slot and return the wait in seconds."""
        now = time.monotonic()
        tat_r = self._tat.get((key, "r"), now)
        go = gcra_conform_at(tat_r, now, 1, 1 / rps, burst)
        if tps > 0:
            tat_t = self._tat.get((key, "t"), now)
            go = max(go, gcra_conform_at(tat_t, now, cost, 1 / tps, token_burst))
            self._tat[(key, "t")] = gcra_advance(tat_t, go, cost, 1 / tps)
        self._tat[(key, "r")] = gcra_advance(tat_r, go, 1, 1 / rps)
        return go - now


ShareOf = Callable[[str], Awaitable[str | None]]
"""Resolves a job id to its fairness share (its tenant); None: the job is its own share."""


def one_share(name: str) -> ShareOf:
    """A `ShareOf` that puts every call in the share `name`, whoever's job it is.

    For a stage that handles its batches one at a time in order (theme): a batch goes on
    only when all of its calls have answered, so a heavy tenant's call weighed down in it
    holds a light tenant's records of the same batch as long as its own. Such a stage's
    calls are few (about one in seventy of a job's) and are better treated as one share
    beside the tenants of the other stages.
    """

    async def share_of(_job_id: str) -> str:
        return name

    return share_of


class RateLimiter:
    """The shared limiter. Built with a Redis client (or None for local-only use) and
    optionally `share_of`, which names the fairness share of a job (see the module
    docstring); a failing `share_of` makes the job its own share for that call."""

    def __init__(
        self,
        redis: Redis | None,
        settings: LLMSettings,
        metrics: LLMMetrics | None = None,
        *,
        gate: asyncio.Semaphore | None = None,
        share_of: ShareOf | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._share_of = share_of
        self._local = LocalLimiter()
        self._shared = SharedScript(
            redis,
            "ratelimit.lua",
            gate=gate or asyncio.Semaphore(settings.redis_max_concurrency),
            timeout_s=settings.redis_timeout_s,
            what="llm limiter",
            fallback=f"using a local limit of {settings.fallback_fraction:.0%} of the quota",
            resumed="shared limiting resumed",
            gauge=metrics.limiter_fallback if metrics else None,
        )

    def _keys(self, limit_key: str, share: str) -> list[str]:
        tag = "{" + f"{self._settings.key_prefix}:rl:{limit_key}" + "}"
        return [
            f"{tag}:s",
            f"{tag}:jobs",
            f"{tag}:o:{share}",
            f"{tag}:w:{share}",
            f"{tag}:heavy",
            f"{tag}:u:{share}",
        ]

    async def share(self, job_id: str | None) -> str:
        """The fairness share of `job_id`'s calls: `t:<tenant>` when `share_of` knows
        it, else `j:<job>` (`DEFAULT_JOB` for calls of no job)."""
        if job_id is None:
            return DEFAULT_JOB
        if self._share_of is not None:
            try:
                tenant = await self._share_of(job_id)
            except Exception as exc:  # fairness must never fail a call
                log.debug("llm limiter: no share for job %s (%s)", job_id, exc)
                tenant = None
            if tenant:
                return f"t:{tenant}"
        return f"j:{job_id}"

    async def _eval(self, keys: list[str], args: list[Any]) -> list[int] | None:
        """Run the script; None (and fallback mode) when Redis is unreachable."""
        return await self._shared.run(keys, args)

    @property
    def degraded(self) -> bool:
        """True while the limiter runs on its local fallback."""
        return self._shared.down

    def _tps(self, cfg: StageConfig) -> float:
        return cfg.tpm / 60.0 if cfg.tpm > 0 else 0.0

    def _token_burst(self, cfg: StageConfig) -> float:
        return max(1.0, self._tps(cfg) * self._settings.tpm_burst_s)

    async def reserve(
        self, cfg: StageConfig, cost: int, job_id: str | None, max_wait_s: float
    ) -> Reservation:
        """Ask once for a slot (see the module docstring)."""
        s = self._settings
        share = await self.share(job_id)
        args = [
            "reserve",
            repr(cfg.rps),
            s.rps_burst,
            repr(self._tps(cfg)),
            repr(self._token_burst(cfg)),
            cost,
            share,
            uuid.uuid4().hex,
            repr(s.limiter_horizon_s),
            repr(s.limiter_active_window_s),
            repr(max(0.0, max_wait_s)),
            repr(s.limiter_free_calls),
            repr(s.limiter_usage_half_life_s),
            repr(s.limiter_heavy_weight),
            repr(s.limiter_borrow_s),
        ]
        res = await self._eval(self._keys(cfg.limit_key, share), args)
        if res is not None:
            return Reservation(
                res[0], res[1] / 1e6, res[2], res[3], go_at=res[4] / 1e6, n_heavy=res[5]
            )
        f = s.fallback_fraction
        wait = self._local.reserve(
            cfg.limit_key,
            rps=cfg.rps * f,
            burst=s.rps_burst,
            tps=self._tps(cfg) * f,
            token_burst=self._token_burst(cfg) * f,
            cost=cost,
        )
        return Reservation(STATUS_GO, wait, local=True)

    async def acquire(
        self, cfg: StageConfig, cost: int, *, job_id: str | None = None, deadline: float
    ) -> Reservation:
        """Wait for this call's turn; returns the granted reservation (with `waited_s`).

        `deadline` is a `time.monotonic()` instant: if the turn would come later, raise
        `LLMRateLimited` (retryable) instead of waiting.
        """
        start = time.monotonic()
        stale = 0
        max_late = self._settings.limiter_max_late_s
        while True:
            res = await self.reserve(cfg, cost, job_id, deadline - time.monotonic())
            # The slot was reserved when the script ran: the time the ask spent queued for
            # the Redis gate or in transit is not lateness (counting it gave up most slots
            # of a loaded process as stale), so the wait counts from the answer.
            now = time.monotonic()
            if res.status == STATUS_GO:
                if res.wait_s > 0:
                    await asyncio.sleep(res.wait_s)
                woke = time.monotonic()
                late = woke - (now + res.wait_s)
                if 0 < max_late < late and stale < MAX_STALE_SLOTS and woke < deadline:
                    # Woken far behind our slot (CPU starvation, a GC pause): sending now
                    # would bunch up with the calls that are on time and earn a 429. The
                    # slot is gone either way; queue again.
                    stale += 1
                    if self._metrics:
                        self._metrics.limiter_stale.labels(cfg.stage, cfg.model).inc()
                    continue
                return dataclasses.replace(res, waited_s=woke - start)
            if res.status == STATUS_TOO_LATE or now + res.wait_s > deadline:
                raise LLMRateLimited(
                    f"rate limit: no slot before the deadline (next in {res.wait_s:.2f}s)",
                    stage=cfg.stage,
                    retry_after=res.wait_s,
                )
            # over this job's fair share: sleep until our ticket, then ask again
            await asyncio.sleep(res.wait_s)

    async def adjust(self, cfg: StageConfig, delta_tokens: int) -> None:
        """Correct the token bucket by actual - estimated tokens of a finished call."""
        if cfg.tpm <= 0 or delta_tokens == 0:
            return
        args = ["adjust", "0", "0", repr(self._tps(cfg)), "0", delta_tokens]
        await self._eval(self._keys(cfg.limit_key, DEFAULT_JOB), args)

    async def penalize(self, cfg: StageConfig, retry_after_s: float) -> None:
        """A provider 429: shrink everyone's rate for the Retry-After window."""
        s = self._settings
        args = [
            "penalize",
            repr(max(0.0, retry_after_s)),
            repr(s.penalty_factor),
            repr(min(s.penalty_factor, s.penalty_min_factor)),
            repr(PENALTY_MIN_WINDOW_S),
        ]
        await self._eval(self._keys(cfg.limit_key, DEFAULT_JOB), args)

    async def hold(self, cfg: StageConfig, seconds: float) -> None:
        """The provider says its window is exhausted: nobody starts a call for `seconds`."""
        if seconds <= 0:
            return
        await self._eval(self._keys(cfg.limit_key, DEFAULT_JOB), ["hold", repr(seconds)])
