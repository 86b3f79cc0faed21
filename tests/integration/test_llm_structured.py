"""Structured output and corrective retries against real parts (issue 15, points 3 and 4):
a real redis-server, the real `openai` client and the fake LLM in its weak-model modes.

- a weak model echoes the schema back under JSON mode; a request that enforces the
  schema (`json_schema`, or llama-cpp-python's `json_object` + `schema`) gets an answer;
- the derived schema of every stage passes a strict provider's checks;
- the system text can open the first user turn (Gemma);
- a model that ignores corrections gets a retry that changes its sampling, and the
  correction quotes every validation error;
- an answer that loops until `max_tokens` is corrected with a frequency penalty, not
  retried with more tokens;
- translate splits a pack the model cannot answer into smaller calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.translate.core import PackLimits
from services.translate.service import LLMTranslator, TranslateHandler
from shared.events import Review, ReviewsLearned
from shared.llm.client import LLM
from shared.llm.errors import LLMMalformedOutput
from shared.llm.metrics import llm_metrics
from shared.llm.schema import response_format
from shared.llm.settings import LLMSettings
from shared.prompts import PROMPTS, insight, learn
from shared.stage import Incoming

if TYPE_CHECKING:
    from llm_fixtures import FakeLLM, RedisProc

pytest_plugins = ["llm_fixtures"]


@pytest.fixture(autouse=True)
def _stack_for_stack_tests() -> None:
    """These tests bring their own Redis and fake LLM: no need for the session stack."""


def make_llm(settings: LLMSettings, redis: Redis | None) -> LLM:
    return LLM(settings, redis, metrics=llm_metrics(CollectorRegistry()))


LEARN_INPUT: dict[str, Any] = {
    "product": "Aurora wireless earbuds",
    "target_language": "en",
    "sample": [
        {"id": "s1", "text": "Battery died after two days, delivery was fast.", "rating": 2},
        {
            "id": "s2",
            "text": "Great sound, the fit is loose and the case feels cheap.",
            "rating": 4,
        },
    ],
}


async def learn_call(llm: LLM, tag: str = "") -> learn.LearnOutput:
    inp = {**LEARN_INPUT, "product": LEARN_INPUT["product"] + tag}
    return await llm.complete("learn", learn.PROMPT, inp, learn.LearnOutput, cache=False)


@pytest.mark.parametrize("mode", ["json_schema", "json_object_schema"])
async def test_an_enforced_schema_stops_a_weak_model_echoing_it(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM, mode: str
) -> None:
    fake_llm.configure(echo_rate=1.0)
    redis = Redis.from_url(llm_redis.url)
    plain = make_llm(llm_settings.model_copy(update={"structured": "json_object"}), redis)
    enforced = make_llm(llm_settings.model_copy(update={"structured": mode}), redis)
    try:
        # JSON mode alone: the schema comes back three times, and the error says so fully
        with pytest.raises(LLMMalformedOutput) as caught:
            await learn_call(plain, " a")
        assert "dimensions" in caught.value.reason and "five_w" in caught.value.reason
        out = await learn_call(enforced, " b")
        assert 5 <= len(out.dimensions) <= 15
        stats = fake_llm.stats()
        assert stats["response_formats"] == {"json_object": 3, mode: 1}
        assert stats["weak"]["echoed"] == 3 and stats["schema_rejected"] == 0
    finally:
        await plain.aclose()
        await enforced.aclose()
        await redis.aclose()


def test_every_stage_schema_passes_a_strict_provider(fake_llm: FakeLLM) -> None:
    """Each stage's derived schema, sent as a strict json_schema request, is accepted, and
    pydantic's own schema (string lengths, defaults) would not be."""
    for stage, prompt in PROMPTS.items():
        derived = response_format("json_schema", stage, prompt.output_model, strict=True)
        raw = {
            "type": "json_schema",
            "json_schema": {
                "name": f"{stage}_output",
                "schema": prompt.output_model.model_json_schema(),
                "strict": True,
            },
        }
        for fmt, status in ((derived, 200), (raw, 400)):
            resp = httpx.post(
                fake_llm.base_url + "/chat/completions",
                json={
                    "model": "voc-fake-1",
                    "messages": prompt.messages(LEARN_INPUT),
                    "response_format": fmt,
                },
                timeout=10,
            )
            assert resp.status_code == status, (stage, resp.text)
    assert fake_llm.stats()["schema_rejected"] == len(PROMPTS)


async def test_the_system_text_can_open_the_user_turn(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(llm_settings.model_copy(update={"system_role": "user"}), redis)
    try:
        text = "Battery died after two days. The price was great!"
        out = await llm.complete(
            "insight",
            insight.PROMPT,
            {
                "review_id": "g1",
                "text": text,
                "rating": 2,
                "dimensions": [{"name": "Battery life"}],
            },
            insight.InsightOutput,
            validate=insight.check_quotes(text),
            cache=False,
        )
        assert out.insights
        stats = fake_llm.stats()
        assert stats["requests"] == 1 and stats["system_messages"] == 0
    finally:
        await llm.aclose()
        await redis.aclose()


async def test_a_retry_after_a_malformed_answer_changes_the_request(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    # The model ignores corrections: the same sampling gets the same junk, byte for byte,
    # as a real model at temperature 0 does. Only a changed request can get another answer.
    fake_llm.configure(stubborn_rate=1.0)
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(llm_settings.model_copy(update={"temperature": 0.0}), redis)
    try:
        out = await learn_call(llm, " stubborn")
        assert len(out.dimensions) >= 5
        stats = fake_llm.stats()
        assert stats["weak"]["stubborn"] == 1, "the first retry already differed"
        assert stats["requests"] == 2
    finally:
        await llm.aclose()
        await redis.aclose()


async def test_an_answer_that_loops_is_corrected_not_given_more_tokens(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    # The model repeats one sentence until max_tokens, as Gemma 270M did under an enforced
    # schema; more tokens would only buy a longer loop. The retry tells it so and sets a
    # frequency penalty (what breaks a greedy loop): the second call answers.
    fake_llm.configure(loop_rate=1.0)
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(llm_settings.model_copy(update={"temperature": 0.0}), redis)
    try:
        out = await learn_call(llm, " loops")
        assert len(out.dimensions) >= 5
        stats = fake_llm.stats()
        assert stats["weak"]["looped"] == 1
        assert stats["requests"] == 2
    finally:
        await llm.aclose()
        await redis.aclose()


def _learned_batch(n: int) -> list[Incoming]:
    reviews = [
        Review(
            id=f"p{k:02d}", text=f"Der Kopfhörer klingt gut, Nummer {k}.", rating=3, language="de"
        )
        for k in range(n)
    ]
    event = ReviewsLearned(job_id="job-split", target_language="en", reviews=reviews)
    return [Incoming(event, "voc.reviews.learned", 0, 0, event.to_bytes(), b"job-split")]


async def test_translate_splits_a_pack_the_model_cannot_answer(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    # The model answers junk to more than 4 items at once, whatever it is told: only a
    # smaller request helps. 8 reviews: one pack (3 tries), then two halves of 4 - not
    # eight calls of one review each.
    fake_llm.configure(max_items=4)
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(llm_settings, redis)
    handler = TranslateHandler(
        LLMTranslator(llm), PackLimits(), concurrency=4, topic_prefix="voc.", linger_s=0.02
    )
    try:
        result = await asyncio.wait_for(handler.handle(_learned_batch(8)), 60)
        assert not result.dead_letters
        ((_, rows),) = result.upserts
        assert len(rows) == 8 and all(r["translated"] for r in rows)
        stats = fake_llm.stats()
        assert stats["weak"]["too_many_items"] == 3
        assert stats["requests"] == 3 + 2
    finally:
        await handler.close()
        await redis.aclose()
