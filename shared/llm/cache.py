"""The LLM result cache in Redis.

A validated answer is stored under a hash of (stage, prompt name, prompt version,
prompt fingerprint, model, input), so a replay or a duplicate review costs no new call.
The cache is an optimisation only: if Redis fails, a lookup is a miss and a store is
skipped (logged once per outage), never an error of the call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.llm.prompts import PromptTemplate, canonical_json

log = logging.getLogger(__name__)


def cache_key(
    prefix: str, stage: str, prompt: PromptTemplate, model: str, input: dict[str, object]
) -> str:
    """The Redis key of an answer: `<prefix>:cache:<stage>:<sha256>`."""
    h = hashlib.sha256()
    for part in (stage, prompt.name, prompt.version, prompt.fingerprint, model):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(canonical_json(input).encode())
    return f"{prefix}:cache:{stage}:{h.hexdigest()}"


class ResultCache:
    """Get/set JSON answers by key with a TTL; Redis errors degrade to misses."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        ttl_s: int,
        timeout_s: float,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self._redis = redis
        self._gate = gate or asyncio.Semaphore(16)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._failing = False

    def _failed(self, op: str, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "llm cache: Redis %s failed (%s); caching is off until it is back",
                op,
                type(exc).__name__,
            )

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("llm cache: Redis is back")

    async def get(self, key: str) -> str | None:
        """The cached JSON text, or None."""
        if self._redis is None:
            return None
        try:
            async with self._gate:
                raw = await asyncio.wait_for(self._redis.get(key), self._timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("get", exc)
            return None
        self._ok()
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def set(self, key: str, value: str) -> None:
        """Store JSON text under `key` for the TTL."""
        if self._redis is None:
            return
        try:
            async with self._gate:
                await asyncio.wait_for(self._redis.set(key, value, ex=self._ttl_s), self._timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("set", exc)
            return
        self._ok()
