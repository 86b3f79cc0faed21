"""Cache-aside for job status documents: in Redis, and the hot ones in memory too.

A status read costs a dozen COUNTs, so the rendered JSON is kept in Redis: one second while
the job runs (pollers see fresh numbers), minutes once it is final (nothing changes any
more). Whoever changes a job drops its entry (`shared.jobstatus.forget_status`: the API on
upload, seal and delete; the report stage; `voc replay job`). Keys carry the tenant, so
one tenant's cached document can never answer another tenant. Redis errors only cost the
cache, never the request.

A Redis GET costs a cached read more CPU than everything else it does, so each replica
also keeps the documents it read in memory, each until its Redis key expires (the GET
asks the key's PTTL in the same round trip): a poller sees exactly what it would see from
Redis. That holds because every change is also announced on
`shared.jobstatus.STATUS_CHANGED_CHANNEL` and `invalidation.Invalidations` drops the copy;
while that subscription is down (or not yet up) the memory layer is off and every read
asks Redis, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.jobstatus import FINAL_STATUSES, forget_status, status_cache_key
from shared.lru import LRU

log = logging.getLogger(__name__)


class StatusCache:
    """Rendered job documents by (tenant, job), with a TTL chosen by the job's status."""

    def __init__(
        self, redis: Redis, ttl_s: float, final_ttl_s: float, local_entries: int = 10_000
    ) -> None:
        self.redis = redis
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.final_ttl_ms = max(1, int(final_ttl_s * 1000))
        self._local: LRU[str, bytes] = LRU(local_entries, ttl_s=max(ttl_s, final_ttl_s))
        self._local_on = False
        # Bumped by every forget: a document fetched while one arrived is not kept.
        self._generation = 0
        self._loading: dict[str, asyncio.Future[bytes | None]] = {}

    def _key(self, tenant_id: str, job_id: str) -> str:
        return status_cache_key(tenant_id, job_id)

    def local_on(self) -> None:
        """Start keeping documents in memory (the change subscription is up)."""
        self._local.clear()
        self._generation += 1
        self._local_on = True

    def local_off(self) -> None:
        """Stop, and drop what is kept (changes may be missed from now on)."""
        self._local_on = False
        self._local.clear()
        self._generation += 1

    def forget_local(self, key: str) -> None:
        """Drop one in-memory document (its job changed, here or on another process)."""
        self._local.pop(key)
        self._generation += 1

    def _keep(self, key: str, document: bytes, ttl_ms: int, generation: int) -> None:
        if self._local_on and generation == self._generation and ttl_ms > 0:
            self._local.put(key, document, ttl_s=ttl_ms / 1000)

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        """The cached document, or None (also when Redis fails)."""
        key = self._key(tenant_id, job_id)
        if self._local_on:
            found, document = self._local.lookup(key)
            if found and document is not None:
                return document
        generation = self._generation
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, ttl_ms = await pipe.execute()
        except RedisError as exc:
            log.warning("status cache read failed", extra={"error": str(exc)})
            return None
        if value is None:
            return None
        document = value.encode() if isinstance(value, str) else bytes(value)
        self._keep(key, document, int(ttl_ms), generation)
        return document

    async def get_or_load(
        self, tenant_id: str, job_id: str, load: Callable[[], Awaitable[tuple[str, bytes] | None]]
    ) -> bytes | None:
        """The cached document, else `load()`'s `(status, document)` stored and returned
        (None: no such job). Concurrent misses of one job share one Redis read and one
        load: when a running job's entry expires under a crowd of pollers, one of them
        counts the rows, not all of them."""
        key = self._key(tenant_id, job_id)
        if self._local_on:
            found, document = self._local.lookup(key)
            if found and document is not None:
                return document
        while (pending := self._loading.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The loader's request was cancelled (its client left): load ourselves.
        pending = self._loading[key] = asyncio.get_running_loop().create_future()
        try:
            document = await self.get(tenant_id, job_id)
            if document is None:
                loaded = await load()
                if loaded is not None:
                    status, document = loaded
                    await self.put(tenant_id, job_id, status, document)
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: nobody may be waiting
            raise
        except BaseException:
            pending.cancel()
            raise
        else:
            pending.set_result(document)
        finally:
            del self._loading[key]
        return document

    async def put(self, tenant_id: str, job_id: str, status: str, document: bytes) -> None:
        """Store a document for as long as its status allows."""
        key = self._key(tenant_id, job_id)
        ttl = self.final_ttl_ms if status in FINAL_STATUSES else self.ttl_ms
        generation = self._generation
        try:
            await self.redis.set(key, document, px=ttl)
        except RedisError as exc:
            log.warning("status cache write failed", extra={"error": str(exc)})
            return
        self._keep(key, document, ttl, generation)

    async def invalidate(self, tenant_id: str, job_id: str) -> None:
        """Forget the job's document everywhere (after the API changed the job)."""
        self.forget_local(self._key(tenant_id, job_id))
        try:
            await forget_status(self.redis, tenant_id, job_id)
        except RedisError as exc:
            log.warning("status cache invalidation failed", extra={"error": str(exc)})
