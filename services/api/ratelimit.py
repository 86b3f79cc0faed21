"""Per-key request rate limit: a token bucket in Redis, one atomic Lua call per request.

Each API key has a bucket of `burst` tokens refilled at `rate_per_s`; a request takes one
token or is refused with the time until the next token (the `Retry-After`). The clock is
Redis's own (`TIME`), so every API replica shares the same bucket consistently. If Redis is
unreachable the limiter lets requests through (logged): the limit protects the service, it
must not take it down.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

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


class RateLimiter:
    """Token bucket per key in Redis; `rate_per_s <= 0` disables it."""

    def __init__(self, redis: Redis, rate_per_s: float, burst: int, prefix: str = "voc:rl:"):
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self.prefix = prefix
        self._script = redis.register_script(TOKEN_BUCKET_LUA)
        self._last_warning = 0.0

    async def acquire(self, key: str) -> float:
        """Take a token for `key`: 0 if allowed, else seconds until one is available."""
        if self.rate_per_s <= 0:
            return 0.0
        try:
            wait = await self._script(keys=[self.prefix + key], args=[self.rate_per_s, self.burst])
        except RedisError as exc:
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning(
                    "rate limiter unavailable, allowing requests", extra={"error": str(exc)}
                )
            return 0.0
        return float(wait)
