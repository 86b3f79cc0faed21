"""`shared.llm.embeddings` against a private fake LLM and redis-server, with the real
`openai` client: batching, the content-hash cache, the shared limiter's 429 handling,
typed errors. The vectors are exactly the fake's float32 values, from a call or the cache.
"""

from __future__ import annotations

import asyncio
import uuid
from array import array

import pytest
from llm_fixtures import FakeLLM, RedisProc

from shared.llm.client import build_llm
from shared.llm.embeddings import EmbedSettings, build_embedder
from shared.llm.errors import LLMRequestRejected, LLMUnavailable
from shared.llm.settings import LLMSettings
from shared.redis import redis_client
from voc.fake_llm.embeddings import embed_text

pytestmark = pytest.mark.integration
# the fixtures llm_redis, fake_llm_server, fake_llm and llm_settings
pytest_plugins = ["llm_fixtures"]


def embed_requests(fake: FakeLLM) -> int:
    return int((fake.stats().get("by_stage") or {}).get("embed", {}).get("requests", 0))


async def test_batched_cached_and_exactly_the_providers_vectors(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    redis = redis_client(llm_redis.url)
    llm = build_llm(llm_settings, redis)
    embedder = build_embedder(llm, EmbedSettings(batch=64))
    tag = uuid.uuid4().hex
    texts = [f"sound {i} {tag}" for i in range(130)]
    try:
        vectors = await embedder.embed([*texts, texts[0]], job_id="j")  # one duplicate
        assert embed_requests(fake_llm) == 3  # 130 distinct inputs, 64 per call
        assert [list(v) for v in vectors[:130]] == [embed_text(t) for t in texts]
        assert list(vectors[130]) == list(vectors[0])
        assert all(isinstance(v, array) and v.typecode == "f" for v in vectors)

        again = await embedder.embed(texts[::-1], job_id="j")  # all from the cache
        assert embed_requests(fake_llm) == 3
        assert [list(v) for v in again] == [list(v) for v in vectors[:130][::-1]]

        # a `--no-cache` replay asks the provider again
        await embedder.embed(texts[:10], job_id="j", cache=False)
        assert embed_requests(fake_llm) == 4
    finally:
        await llm.aclose()
        await redis.aclose()


async def test_429s_are_retried_under_the_limiter_and_refusals_are_typed(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    redis = redis_client(llm_redis.url)
    llm = build_llm(llm_settings, redis)
    tag = uuid.uuid4().hex
    fake_llm.configure(rate_limit_rps=2, rate_limit_burst=1)
    try:
        embedder = build_embedder(llm, EmbedSettings(batch=1))
        vectors = await asyncio.gather(
            *(embedder.embed([f"battery {i} {tag}"], job_id="j") for i in range(4))
        )
        assert [list(v[0]) for v in vectors] == [embed_text(f"battery {i} {tag}") for i in range(4)]
        stats = fake_llm.stats()["by_stage"]["embed"]
        assert stats["ok"] == 4  # whatever 429s happened were retried

        fake_llm.configure(rate_limit_rps=0, rate_limit_burst=0)
        with pytest.raises(LLMRequestRejected) as refused:
            await build_embedder(llm, EmbedSettings(dimensions=3)).embed([f"x {tag}"])
        assert refused.value.status_code == 400

        fake_llm.configure(error_rate=1.0, fault_match=f"down {tag}")
        fast = build_llm(llm_settings.model_copy(update={"max_attempts": 2}), redis)
        try:
            with pytest.raises(LLMUnavailable):
                await build_embedder(fast).embed([f"down {tag}"])
        finally:
            await fast.aclose()
    finally:
        await llm.aclose()
        await redis.aclose()
