"""Request rate limits: token buckets in Redis, one atomic Lua call per request.

A bucket holds `burst` tokens refilled at `rate_per_s`; a request takes one token or is
refused with the time until the next token (the `Retry-After`). The clock is Redis's own
(`TIME`), so every API replica shares the same bucket consistently. The API keeps two
kinds of bucket (see `deps.get_tenant`): one per tenant (all its keys together) and one per
client address for API-key lookups in Postgres.

What happens while Redis is unreachable is chosen per call (`WhenDown`):
- `OPEN`: the request passes (cheap reads: status polling must survive a Redis blip);
- `CLOSED`: `LimiterUnavailable`, answered 503 with Retry-After (writes, which start
  pipeline work that needs Redis anyway);
- `LOCAL`: an in-process bucket per key on this replica (key lookups: Postgres must stay
  protected, and clients must still be able to sign in).
"""

from __future__ import annotations

import enum
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.lru import LRU

log = logging.getLogger(__name__)

TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
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
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


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


class RateLimiter:
    """Token buckets by key in Redis; a rate `<= 0` disables a limit."""

    def __init__(self, redis: Redis, prefix: str = "voc:rl:", local_keys: int = 10_000):
        self.prefix = prefix
        self._script = redis.register_script(TOKEN_BUCKET_LUA)
        self._local: LRU[str, LocalBucket] = LRU(local_keys)
        self._last_warning = 0.0

    async def acquire(self, key: str, rate_per_s: float, burst: int, when_down: WhenDown) -> float:
        """Take a token for `key`: 0 if allowed, else seconds until one is available.

        Raises `LimiterUnavailable` if Redis is down and `when_down` is `CLOSED`.
        """
        if rate_per_s <= 0:
            return 0.0
        burst = max(1, burst)
        try:
            wait = await self._script(keys=[self.prefix + key], args=[rate_per_s, burst])
        except RedisError as exc:
            self._warn(exc, when_down)
            if when_down is WhenDown.CLOSED:
                raise LimiterUnavailable("the rate limiter (Redis) is unavailable") from exc
            if when_down is WhenDown.OPEN:
                return 0.0
            return self._local_take(key, rate_per_s, burst)
        return float(wait)

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
