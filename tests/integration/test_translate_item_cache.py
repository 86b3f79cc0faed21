"""Translations are cached per review text, whatever call they were packed into."""

from __future__ import annotations

import os
import uuid

from redis.asyncio import Redis

from services.translate.core.batching import ToTranslate
from services.translate.item_cache import ItemCache
from shared.prompts.translate import TranslatedItem


async def test_a_text_translated_in_one_pack_is_found_in_another(stack: dict[str, str]) -> None:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    cache = ItemCache(redis, model=f"test-{uuid.uuid4().hex[:8]}", ttl_s=60)
    text = f"Der Akku hält lange {uuid.uuid4().hex}"
    first = [ToTranslate("r1", text, "de"), ToTranslate("r2", "nicht übersetzt", "de")]
    await cache.put_many(
        "en",
        first,
        [
            TranslatedItem(id="r1", translation="The battery lasts long", source_language="de"),
            TranslatedItem(id="r2", translation="  ", source_language="de"),  # empty: not kept
            TranslatedItem(id="zz", translation="unknown id", source_language="de"),
        ],
    )
    # the same text under another review id, packed with other reviews
    later = [ToTranslate("x9", text, "de"), ToTranslate("x10", "nicht übersetzt", "de")]
    found = await cache.get_many("en", later)
    assert list(found) == ["x9"]
    assert found["x9"].translation == "The battery lasts long"
    assert await cache.get_many("fr", later) == {}  # another target language
    await redis.aclose()
