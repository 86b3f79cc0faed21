"""The LLM result cache in Redis.

A validated answer is stored under a hash of (scope, stage, prompt name, prompt version,
prompt fingerprint, model, input), so a replay or a duplicate call costs no new call. The
scope is the job the call is for (the LLM client passes its `job_id`): an answer is only
ever reused for the same job, so no tenant's input (a prompt injection, or simply being
first with a text) can decide what another tenant's job gets, nor can a tenant learn from
a hit that another tenant sent the same input. A replay of a job is the same scope, so it
is still answered from the cache.
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
    prefix: str,
    stage: str,
    prompt: PromptTemplate,
    model: str,
    input: dict[str, object],
    *,
    scope: str | None,
) -> str:
    """The Redis key of an answer: `<prefix>:cache:<stage>:<sha256>`.

    `scope` isolates answers: only calls of the same scope share them (the job id; None
    for calls made outside any job, such as tools, which share one scope of their own).
    """
    h = hashlib.sha256()
    h.update(b"-" if scope is None else b"job:" + scope.encode())
    h.update(b"\x00")
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
