"""Cache-aside for job status documents in Redis.

A status read costs a dozen COUNTs, so the rendered JSON is kept in Redis: one second while
the job runs (pollers see fresh numbers), minutes once it is final (nothing changes any
more). The API drops the entry itself whenever it writes the job (upload, seal). Keys carry
the tenant, so one tenant's cached document can never answer another tenant. Redis errors
only cost the cache, never the request.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.jobstatus import FINAL_STATUSES, status_cache_key

log = logging.getLogger(__name__)


class StatusCache:
    """Rendered job documents by (tenant, job), with a TTL chosen by the job's status."""

    def __init__(self, redis: Redis, ttl_s: float, final_ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.final_ttl_ms = max(1, int(final_ttl_s * 1000))

    def _key(self, tenant_id: str, job_id: str) -> str:
        return status_cache_key(tenant_id, job_id)

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        """The cached document, or None (also when Redis fails)."""
        try:
            value = await self.redis.get(self._key(tenant_id, job_id))
        except RedisError as exc:
            log.warning("status cache read failed", extra={"error": str(exc)})
            return None
        return value.encode() if isinstance(value, str) else value

    async def put(self, tenant_id: str, job_id: str, status: str, document: bytes) -> None:
        """Store a document for as long as its status allows."""
        ttl = self.final_ttl_ms if status in FINAL_STATUSES else self.ttl_ms
        try:
            await self.redis.set(self._key(tenant_id, job_id), document, px=ttl)
        except RedisError as exc:
            log.warning("status cache write failed", extra={"error": str(exc)})

    async def invalidate(self, tenant_id: str, job_id: str) -> None:
        """Forget the job's document (after the API changed the job)."""
        try:
            await self.redis.delete(self._key(tenant_id, job_id))
        except RedisError as exc:
            log.warning("status cache invalidation failed", extra={"error": str(exc)})
