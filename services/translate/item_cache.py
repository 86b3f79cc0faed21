"""Translations cached per review text, not per packed call, and per tenant.

The LLM layer caches whole answers by their exact input, but translate packs ~30 reviews
per call and which reviews share a call depends on timing: a replay packs them differently
and would miss that cache. Keyed by (tenant, prompt version, model, target language,
source language, text), each translation is found again whatever it was packed with, so
replays and duplicate reviews (in any job of the tenant) cost no call. Redis trouble only
costs the cache.

The tenant is part of the key because an entry is filled from a packed call whose other
items the job's own tenant wrote: a prompt injection in one review can set the
translation of another text in the same call. Scoped per tenant, that can only ever reach
the injecting tenant's own jobs. The stage knows only the job, so `shared.db.tenants.JobTenants`
looks the tenant up in Postgres once per job and keeps it in process.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.translate.core.batching import ToTranslate
from shared.db.tenants import JobTenants
from shared.prompts.translate import PROMPT, TranslatedItem

log = logging.getLogger(__name__)


class ItemCache:
    """Per-item translations in Redis, `ttl_s` seconds, separate for every tenant."""

    def __init__(
        self,
        redis: Redis,
        model: str,
        ttl_s: int,
        tenants: JobTenants,
        prefix: str = "vocllm",
    ) -> None:
        self.redis = redis
        self.model = model
        self.ttl_s = ttl_s
        self.tenants = tenants
        self.prefix = prefix

    def key(self, tenant_id: str, target_language: str, item: ToTranslate) -> str:
        """The cache key of one item's translation for a tenant (its id plays no part)."""
        raw = orjson.dumps([tenant_id, target_language, item.source_language, item.text])
        digest = hashlib.sha256(raw).hexdigest()
        return f"{self.prefix}:translate-item:v{PROMPT.version}:{self.model}:{digest}"

    async def get_many(
        self, job_id: str, target_language: str, items: Sequence[ToTranslate]
    ) -> dict[str, TranslatedItem]:
        """Cached translations of the job's tenant by review id (missing ones absent)."""
        if not items:
            return {}
        tenant = await self.tenants.tenant_of(job_id)
        if tenant is None:
            return {}  # no scope to look in: translate afresh
        try:
            values = await self.redis.mget([self.key(tenant, target_language, i) for i in items])
        except RedisError as exc:
            log.warning("translation cache unavailable", extra={"error": repr(exc)})
            return {}
        found = {}
        for item, value in zip(items, values, strict=True):
            if value is not None:
                doc = orjson.loads(value)
                found[item.review_id] = TranslatedItem(
                    id=item.review_id,
                    translation=doc["translation"],
                    source_language=doc["source_language"],
                )
        return found

    async def put_many(
        self,
        job_id: str,
        target_language: str,
        items: Sequence[ToTranslate],
        answers: Sequence[TranslatedItem],
    ) -> None:
        """Store, for the job's tenant, the answers that match an item (by id) and are
        not empty."""
        tenant = await self.tenants.tenant_of(job_id)
        if tenant is None:
            return
        by_id = {i.review_id: i for i in items}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for answer in answers:
                    item = by_id.get(answer.id)
                    if item is None or not answer.translation.strip():
                        continue
                    value = orjson.dumps(
                        {
                            "translation": answer.translation,
                            "source_language": answer.source_language,
                        }
                    )
                    pipe.set(self.key(tenant, target_language, item), value, ex=self.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            log.warning("translation cache unavailable", extra={"error": repr(exc)})
