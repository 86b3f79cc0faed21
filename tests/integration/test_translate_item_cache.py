"""Translations are cached per review text (per tenant), whatever call they were packed into."""

from __future__ import annotations

import os
import uuid

from redis.asyncio import Redis

from services.translate.core.batching import ToTranslate
from services.translate.item_cache import ItemCache
from shared.db.pool import ConnectionPool
from shared.db.tenants import JobTenants
from shared.prompts.translate import TranslatedItem
from shared.settings import DatabaseSettings


async def test_a_text_translated_in_one_pack_is_found_in_another(stack: dict[str, str]) -> None:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    pool = ConnectionPool(DatabaseSettings().libpq_url(), size=1)
    await pool.open()
    tenant = f"itemcache-{uuid.uuid4().hex[:8]}"
    jobs = [str(uuid.uuid4()), str(uuid.uuid4())]
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id) VALUES (%s)", (tenant,))
        for job in jobs:
            await conn.execute(
                "INSERT INTO jobs (id, tenant_id, product, target_language) "
                "VALUES (%s, %s, 'p', 'en')",
                (job, tenant),
            )
        await conn.commit()
    cache = ItemCache(
        redis, model=f"test-{uuid.uuid4().hex[:8]}", ttl_s=60, tenants=JobTenants(pool)
    )
    text = f"Der Akku hält lange {uuid.uuid4().hex}"
    first = [ToTranslate("r1", text, "de"), ToTranslate("r2", "nicht übersetzt", "de")]
    await cache.put_many(
        jobs[0],
        "en",
        first,
        [
            TranslatedItem(id="r1", translation="The battery lasts long", source_language="de"),
            TranslatedItem(id="r2", translation="  ", source_language="de"),  # empty: not kept
            TranslatedItem(id="zz", translation="unknown id", source_language="de"),
        ],
    )
    # the same text under another review id, packed with other reviews, in another job
    later = [ToTranslate("x9", text, "de"), ToTranslate("x10", "nicht übersetzt", "de")]
    found = await cache.get_many(jobs[1], "en", later)
    assert list(found) == ["x9"]
    assert found["x9"].translation == "The battery lasts long"
    assert await cache.get_many(jobs[1], "fr", later) == {}  # another target language
    await redis.aclose()
    await pool.close()
