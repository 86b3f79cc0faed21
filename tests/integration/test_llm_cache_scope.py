"""The LLM result cache is scoped by job: one job's answer is never served to another.

Real `openai` client, a private redis-server and the fake LLM server (llm_fixtures.py).
Whoever is first with an input must not decide (or learn, from a hit) what another
tenant's job gets; a replay of the same job is still answered from the cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from shared.llm.cache import cache_key
from shared.llm.client import LLM
from shared.llm.metrics import llm_metrics
from shared.llm.settings import LLMSettings
from shared.prompts import insight

if TYPE_CHECKING:
    from llm_fixtures import FakeLLM, RedisProc

pytest_plugins = ["llm_fixtures"]

INPUT = {
    "review_id": "same-review",
    "text": "Battery died after two days. The price was great!",
    "rating": 2,
    "dimensions": [{"name": "Battery life", "description": "battery"}],
    "five_w": {},
}


@pytest.fixture(autouse=True)
def _stack_for_stack_tests() -> None:
    """These tests bring their own Redis and fake LLM: no need for the session stack."""


def test_keys_differ_by_scope_only_when_the_scope_does() -> None:
    key = cache_key("p", "insight", insight.PROMPT, "m", INPUT, scope="job-a")
    assert key == cache_key("p", "insight", insight.PROMPT, "m", dict(INPUT), scope="job-a")
    assert key != cache_key("p", "insight", insight.PROMPT, "m", INPUT, scope="job-b")
    assert key != cache_key("p", "insight", insight.PROMPT, "m", INPUT, scope=None)
    assert key.startswith("p:cache:insight:")


async def test_same_input_in_two_jobs_is_two_calls_and_a_replay_is_none(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    redis = Redis.from_url(llm_redis.url)
    llm = LLM(llm_settings, redis, metrics=llm_metrics(CollectorRegistry()))
    try:
        first = await llm.complete(
            "insight", insight.PROMPT, INPUT, insight.InsightOutput, job_id="job-of-tenant-a"
        )
        assert fake_llm.stats()["requests"] == 1
        other = await llm.complete(
            "insight", insight.PROMPT, INPUT, insight.InsightOutput, job_id="job-of-tenant-b"
        )
        assert fake_llm.stats()["requests"] == 2, "job B was answered from job A's entry"
        replay = await llm.complete(
            "insight", insight.PROMPT, INPUT, insight.InsightOutput, job_id="job-of-tenant-a"
        )
        assert fake_llm.stats()["requests"] == 2
        assert first == replay and other == first  # the fake answers alike: only scope differs
    finally:
        await llm.aclose()
        await redis.aclose()
