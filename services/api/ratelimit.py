"""Request rate limits: token buckets in Redis, taken from in leases.

A bucket holds `burst` tokens refilled at `rate_per_s`; a request takes one token or is
refused with the time until the next token (the `Retry-After`). The clock is Redis's own
(`TIME`), so every API replica shares the same bucket consistently. The API keeps two
kinds of bucket (see `deps.get_tenant`): one per tenant (all its keys together) and one per
client address for API-key lookups in Postgres.

A Redis round trip costs more CPU than the rest of a cached status read, so a busy key
does not ask Redis per request: one atomic Lua call takes a *lease* of up to
`rate_per_s * LEASE_S` tokens (never more than the bucket holds; one token for a quiet
key or a slow limit), which this replica spends locally for at most `LEASE_S`; tokens
still held then are dropped, never carried over, so a replica can exceed its share of the
burst by one lease at most. A refusal is remembered locally until the next token is due:
a client hammering past its limit costs no Redis call per request either.

What happens while Redis is unreachable is chosen per call (`WhenDown`):
- `OPEN`: the request passes (cheap reads: status polling must survive a Redis blip);
- `CLOSED`: `LimiterUnavailable`, answered 503 with Retry-After (writes, which start
  pipeline work that needs Redis anyway);
- `LOCAL`: an in-process bucket per key on this replica (key lookups: Postgres must stay
  protected, and clients must still be able to sign in).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.lru import LRU

log = logging.getLogger(__name__)

TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(wait)}
"""
# How long a replica may spend a lease of tokens; also its size at the bucket's rate.
LEASE_S = 0.1
MAX_LEASE = 1000


class WhenDown(enum.Enum):
    """What a limit does while Redis cannot be asked."""

    OPEN = "open"
    CLOSED = "closed"
    LOCAL = "local"


class LimiterUnavailable(Exception):
    """Redis is unreachable and the limit fails closed (HTTP 503, retry later)."""


class LocalBucket:
    """An in-process token bucket (the `LOCAL` fallback)."""

    def __init__(self, burst: float) -> None:
        self.tokens = burst
        self.ts = time.monotonic()

    def take(self, rate: float, burst: float) -> float:
        """Take a token: 0 if allowed, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.ts) * rate)
        self.ts = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class Lease:
    """Tokens this replica took from a key's bucket, and the key's local demand."""

    __slots__ = ("asking", "blocked_until", "expires", "since", "tokens", "used")

    def __init__(self, now: float) -> None:
        self.tokens = 0
        self.expires = now
        self.blocked_until = 0.0
        self.since = now  # when the last lease was asked for
        self.used = 0  # requests since then
        # The ask in flight: requests arriving meanwhile wait for its lease, not ask too.
        self.asking: asyncio.Future[bool] | None = None

    def want(self, now: float, rate_per_s: float, burst: int) -> int:
        """Tokens to ask for: what the key used per `LEASE_S` since the last ask, within
        the rate's lease (1 for a quiet key or a slow limit)."""
        cap = max(1, min(MAX_LEASE, burst, int(rate_per_s * LEASE_S)))
        elapsed = max(now - self.since, 1e-3)
        return max(1, min(cap, math.ceil(self.used * LEASE_S / elapsed)))


class RateLimiter:
    """Token buckets by key in Redis, spent from leases; a rate `<= 0` disables a limit."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "voc:rl:",
        local_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.prefix = prefix
        self._script = redis.register_script(TOKEN_BUCKET_LUA)
        self._local: LRU[str, LocalBucket] = LRU(local_keys)
        self._leases: LRU[str, Lease] = LRU(local_keys)
        self._clock = clock
        self._last_warning = 0.0

    async def acquire(self, key: str, rate_per_s: float, burst: int, when_down: WhenDown) -> float:
        """Take a token for `key`: 0 if allowed, else seconds until one is available.

        Raises `LimiterUnavailable` if Redis is down and `when_down` is `CLOSED`.
        """
        if rate_per_s <= 0:
            return 0.0
        burst = max(1, burst)
        found, lease = self._leases.lookup(key)
        if not found or lease is None:
            lease = Lease(self._clock())
            self._leases.put(key, lease)
        lease.used += 1
        while True:
            now = self._clock()
            if lease.tokens > 0 and now < lease.expires:
                lease.tokens -= 1
                return 0.0
            if now < lease.blocked_until:
                return lease.blocked_until - now
            if lease.asking is None:
                break
            if not await asyncio.shield(lease.asking):
                # The ask failed (Redis is down): answer as it would have, not ask again
                # one after another, each waiting out the socket timeout.
                return self._down(key, rate_per_s, burst, when_down)
        asking = lease.asking = asyncio.get_running_loop().create_future()
        ok = False
        try:
            wait = await self._ask(lease, key, rate_per_s, burst)
            ok = True
        except RedisError as exc:
            self._warn(exc, when_down)
            return self._down(key, rate_per_s, burst, when_down, exc)
        finally:
            asking.set_result(ok)
            lease.asking = None
        return wait

    def _down(
        self,
        key: str,
        rate_per_s: float,
        burst: int,
        when_down: WhenDown,
        exc: RedisError | None = None,
    ) -> float:
        """The answer while Redis cannot be asked (see `WhenDown`)."""
        if when_down is WhenDown.CLOSED:
            raise LimiterUnavailable("the rate limiter (Redis) is unavailable") from exc
        if when_down is WhenDown.OPEN:
            return 0.0
        return self._local_take(key, rate_per_s, burst)

    async def _ask(self, lease: Lease, key: str, rate_per_s: float, burst: int) -> float:
        """One call of the script for a new lease; this request takes its first token.
        Raises RedisError."""
        want = lease.want(self._clock(), rate_per_s, burst)
        granted, wait = await self._script(keys=[self.prefix + key], args=[rate_per_s, burst, want])
        now = self._clock()
        lease.since, lease.used = now, 0
        if int(granted) < 1:
            lease.tokens = 0
            lease.blocked_until = now + float(wait)
            return float(wait)
        lease.tokens = int(granted) - 1  # this request's token
        lease.expires = now + LEASE_S
        return 0.0

    def _local_take(self, key: str, rate_per_s: float, burst: int) -> float:
        found, bucket = self._local.lookup(key)
        if not found or bucket is None:
            bucket = LocalBucket(burst)
            self._local.put(key, bucket)
        return bucket.take(rate_per_s, burst)

    def _warn(self, exc: RedisError, when_down: WhenDown) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning(
                "rate limiter unavailable",
                extra={"error": type(exc).__name__, "when_down": when_down.value},
            )
