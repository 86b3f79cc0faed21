"""learn + translate on the real stack: Kafka, Postgres, Redis, the fake LLM, both services.

Each test makes its own jobs (random ids), writes their `jobs` and `reviews` rows as the API
and ingest would, produces `ReviewsIngested` events on `reviews.ingested` and watches:
learn holds a job's reviews in `learn_pending` until a sample of 200 is there, the job is
sealed or 10 s passed, stores one `job_models` row, releases everything onto
`reviews.learned`; translate writes one `translations` row per review (target-language
reviews unchanged and untranslated), emits every review on `reviews.translated`, and makes
far fewer LLM calls than reviews. A kill -9 of learn mid-way leaves no job learned twice
and none stuck.

The services run with their defaults (`VOC_LEARN_SAMPLE_SIZE=200`, `VOC_LEARN_TIMEOUT_S=10`).
The fake LLM's `/stats` counts the calls of every test using the stack at the same time,
so the call-count check is an upper bound that concurrent translate-heavy tests could spoil.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from ingest_kit import collect, db, end_offsets, prefix, scalar, wait_for
from learn_translate_kit import (
    count,
    held_reviews,
    job_model,
    language_of,
    llm_calls,
    make_job,
    make_reviews,
    review_id,
    seal,
    send_ingested,
    store_reviews,
    translations,
)

from services.learn.core import DEFAULT_DIMENSIONS
from shared.events import ReviewsLearned, ReviewsTranslated
from shared.topics import REVIEWS_LEARNED, REVIEWS_TRANSLATED, dlq
from voc.fake_llm.gloss import gloss
from voc.stack import Stack

pytestmark = pytest.mark.integration

TIMEOUT = 90.0
SERVICES = ("learn", "translate")


@pytest.fixture(scope="module")
async def services(stack: dict[str, str], stack_ctl: Stack) -> AsyncIterator[Stack]:
    """learn and translate running on the stack (started if they are not), with the fake LLM."""
    if not os.environ.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    for name in SERVICES:
        if stack_ctl.service_pid(name) is None:
            await asyncio.to_thread(stack_ctl.start_service, name)
    yield stack_ctl
    for name in SERVICES:
        if stack_ctl.service_pid(name) is None:
            await asyncio.to_thread(stack_ctl.start_service, name)


async def wait_translated(job: str, n: int, timeout: float = TIMEOUT) -> bool:
    """Wait until the job has `n` translation rows."""

    async def done() -> bool:
        return await count("translations", job) >= n

    return await wait_for(done, timeout, interval=0.2)


def review_ids(
    records: list[ConsumerRecord[bytes, bytes]], model: type[ReviewsLearned | ReviewsTranslated]
) -> list[str]:
    """Review ids carried by a list of records of `model` events."""
    return [r.id for rec in records for r in model.model_validate_json(rec.value).reviews]


async def test_reviews_are_held_until_the_sample_then_learned_once_and_translated(
    services: Stack,
) -> None:
    job = f"lt-{os.urandom(6).hex()}-{int(time.time())}"[:36]
    n = 240
    reviews = make_reviews(job, n)
    await make_job(job, "en")
    await store_reviews(job, reviews)
    learned_since = await end_offsets(REVIEWS_LEARNED.full_name(prefix()))
    translated_since = await end_offsets(REVIEWS_TRANSLATED.full_name(prefix()))
    calls_before = llm_calls("translate")

    # 100 reviews: fewer than the sample, not sealed, well within the timeout: held.
    await send_ingested(job, reviews[:100])

    async def held_all() -> bool:
        return await held_reviews(job) == 100

    assert await wait_for(held_all, 8.0), "learn did not hold the first reviews"
    assert await job_model(job) is None
    assert await count("translations", job) == 0

    # The rest completes the sample: learned once, everything released and translated.
    await send_ingested(job, reviews[100:], first=2)
    assert await wait_translated(job, n), f"only {await count('translations', job)} of {n}"
    model = await job_model(job)
    assert model is not None
    sample_size, _, created_at, dimensions = model
    assert sample_size == 200  # every review was stored: the sample is capped
    assert 5 <= len(dimensions) <= 15
    assert await count("job_models", job) == 1
    assert await held_reviews(job) == 0

    rows = await translations(job)
    assert set(rows) == {r.id for r in reviews}
    for i, r in enumerate(reviews):
        source, target, text, translated = rows[r.id]
        assert (source, target) == (language_of(i), "en")
        if language_of(i) == "en":
            assert (text, translated) == (r.text, False)
        else:
            assert translated and text == gloss(r.text, source, "en")  # the fake's gloss

    to_translate = sum(1 for i in range(n) if language_of(i) != "en")
    calls = llm_calls("translate") - calls_before
    assert calls <= to_translate / 8, f"{calls} translate calls for {to_translate} reviews"

    wanted = {r.id for r in reviews}
    learned = await collect(
        learned_since,
        lambda rec: rec.key is not None and rec.key.startswith(job.encode()),
        lambda kept: set(review_ids(kept, ReviewsLearned)) >= wanted,
        30.0,
    )
    assert set(review_ids(learned, ReviewsLearned)) == wanted
    translated = await collect(
        translated_since,
        lambda rec: rec.key is not None and rec.key.startswith(job.encode()),
        lambda kept: set(review_ids(kept, ReviewsTranslated)) >= wanted,
        30.0,
    )
    assert set(review_ids(translated, ReviewsTranslated)) == wanted

    # Later reviews of a learned job pass straight through; the model is not learned again.
    extra = make_reviews(job, n + 16)[n:]
    await store_reviews(job, extra)
    await send_ingested(job, extra, first=10)
    assert await wait_translated(job, n + 16, timeout=30.0)
    assert await held_reviews(job) == 0
    again = await job_model(job)
    assert again is not None and again[2] == created_at


async def test_a_small_job_is_learned_when_sealed_and_target_language_reviews_skip(
    services: Stack,
) -> None:
    job = f"lt-seal-{os.urandom(6).hex()}"
    n = 30
    reviews = make_reviews(job, n)
    await make_job(job, "de")
    await store_reviews(job, reviews)
    t0 = time.monotonic()
    await send_ingested(job, reviews, per_event=10)

    async def held_all() -> bool:
        return await held_reviews(job) == n

    assert await wait_for(held_all, 5.0)
    await asyncio.sleep(1.0)
    assert await job_model(job) is None, "learned before the sample, seal or timeout"
    await seal(job)
    assert await wait_translated(job, n, timeout=30.0)
    # Learned on the seal, not by the 10 s timeout.
    assert time.monotonic() - t0 < 8.0, "the seal did not trigger learning"
    model = await job_model(job)
    assert model is not None and model[0] == n
    rows = await translations(job)
    for i, r in enumerate(reviews):
        source, target, text, translated = rows[r.id]
        assert target == "de"
        assert translated == (language_of(i) != "de")
        if language_of(i) == "de":
            assert (source, text) == ("de", r.text)


async def test_a_small_unsealed_job_is_learned_after_the_timeout(services: Stack) -> None:
    job = f"lt-wait-{os.urandom(6).hex()}"
    n = 12
    reviews = make_reviews(job, n)
    await make_job(job, "en")
    await store_reviews(job, reviews)
    t0 = time.monotonic()
    await send_ingested(job, reviews, per_event=4)
    await asyncio.sleep(6.0)
    assert await job_model(job) is None, "learned before the timeout"
    assert await held_reviews(job) == n
    assert await wait_translated(job, n, timeout=40.0)
    assert time.monotonic() - t0 >= 9.0
    assert await held_reviews(job) == 0


async def fake_llm_config(patch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read (or change) the fake LLM's config through its admin endpoint."""
    url = os.environ["VOC_FAKE_LLM_URL"].rstrip("/") + "/admin/config"
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await (client.post(url, json=patch) if patch is not None else client.get(url))
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc


async def test_malformed_llm_answers_give_a_default_model_and_dead_letter_reviews_alone(
    services: Stack,
) -> None:
    marker = f"ZQXFAULT{os.urandom(4).hex()}"
    job = f"lt-fault-{os.urandom(6).hex()}"
    n = 60
    bad = {i for i in (1, 9, 17, 33) if language_of(i) != "en"}
    reviews = [
        r.model_copy(update={"text": f"{r.text} {marker}"}) if i in bad else r
        for i, r in enumerate(make_reviews(job, n))
    ]
    await make_job(job, "en", product=f"Earbuds {marker}")
    await store_reviews(job, reviews)
    dlq_since = await end_offsets(dlq("translate").full_name(prefix()))
    before = await fake_llm_config()
    await fake_llm_config({"malformed_rate": 1.0, "fault_match": marker})
    try:
        await send_ingested(job, reviews, per_event=20)
        await seal(job)
        assert await wait_translated(job, n - len(bad))
        bad_ids = {reviews[i].id for i in bad}

        async def all_dead() -> bool:
            async with db() as conn:
                got = await scalar(
                    conn,
                    "SELECT count(*) FROM dead_letters WHERE job_id = %s AND stage = 'translate'",
                    job,
                )
            return bool(got == len(bad))

        assert await wait_for(all_dead, 30.0)
    finally:
        await fake_llm_config(
            {
                "malformed_rate": before.get("malformed_rate", 0.0),
                "fault_match": before.get("fault_match"),
            }
        )

    # The learn prompt (it names the product) kept failing: the job got the default model.
    model = await job_model(job)
    assert model is not None
    assert model[1] == "default"
    assert model[3] == [d[0] for d in DEFAULT_DIMENSIONS]
    rows = await translations(job)
    assert set(rows) == {r.id for r in reviews} - bad_ids
    async with db() as conn:
        cur = await conn.execute(
            "SELECT review_id, error_type, topic FROM dead_letters"
            " WHERE job_id = %s AND stage = 'translate'",
            (job,),
        )
        dead = {rid: (etype, topic) for rid, etype, topic in await cur.fetchall()}
    assert set(dead) == bad_ids
    assert {etype for etype, _ in dead.values()} == {"LLMMalformedOutput"}
    assert {topic for _, topic in dead.values()} == {REVIEWS_LEARNED.full_name(prefix())}

    def on_dlq(rec: ConsumerRecord[bytes, bytes]) -> bool:
        return dict(rec.headers or ()).get("voc-job-id") == job.encode()

    recs = await collect(dlq_since, on_dlq, lambda r: len(r) >= len(bad), timeout=30)
    for rec in recs:  # each is a redrivable ReviewsLearned of that review alone
        event = ReviewsLearned.model_validate_json(rec.value)
        assert [r.id for r in event.reviews] == [dict(rec.headers)["voc-review-id"].decode()]
    assert {dict(r.headers)["voc-review-id"].decode() for r in recs} == bad_ids


def _stored_lines(log_path: str, start: int, jobs: set[str]) -> dict[str, int]:
    """How many 'job model stored' log lines each of `jobs` has after byte `start`."""
    found = dict.fromkeys(jobs, 0)
    with open(log_path, "rb") as f:
        f.seek(start)
        for raw in f:
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if doc.get("msg") == "job model stored" and doc.get("job_id") in found:
                found[doc["job_id"]] += 1
    return found


async def test_kill9_of_learn_mid_way_learns_every_job_once_and_strands_none(
    services: Stack,
) -> None:
    tag = os.urandom(4).hex()
    sizes = {
        f"lt-k9-{tag}-big1": 250,
        f"lt-k9-{tag}-big2": 250,
        f"lt-k9-{tag}-seal": 40,
        f"lt-k9-{tag}-wait": 40,
    }
    jobs = {job: make_reviews(job, n) for job, n in sizes.items()}
    for job, reviews in jobs.items():
        await make_job(job, "en")
        await store_reviews(job, reviews)
    log_path = str(services.log_path("learn"))
    log_start = os.path.getsize(log_path)
    translated_since = await end_offsets(REVIEWS_TRANSLATED.full_name(prefix()))

    big1, big2, sealed, waiting = sizes
    await send_ingested(big1, jobs[big1])
    await send_ingested(sealed, jobs[sealed], per_event=10)
    await send_ingested(waiting, jobs[waiting], per_event=10)

    async def big1_learned() -> bool:
        # its log line too: it is written just after the commit, and a kill between the two
        # would leave a model stored once with no line to count
        if await job_model(big1) is None:
            return False
        return _stored_lines(log_path, log_start, {big1})[big1] == 1

    assert await wait_for(big1_learned, 30.0)
    # Learn dies with held state in Postgres: big2 about to arrive, sealed/waiting held.
    await asyncio.to_thread(services.kill_service, "learn")
    await send_ingested(big2, jobs[big2])
    await seal(sealed)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(services.start_service, "learn")

    for job, n in sizes.items():
        assert await wait_translated(job, n), f"{job}: {await count('translations', job)} of {n}"
    for job in sizes:
        assert await count("job_models", job) == 1
        assert await held_reviews(job) == 0
    assert _stored_lines(log_path, log_start, set(sizes)) == dict.fromkeys(sizes, 1)

    wanted = {review_id(job, i) for job, n in sizes.items() for i in range(n)}
    keys = tuple(job.encode() for job in sizes)
    translated = await collect(
        translated_since,
        lambda rec: rec.key is not None and rec.key.startswith(keys),
        lambda kept: set(review_ids(kept, ReviewsTranslated)) >= wanted,
        30.0,
    )
    assert set(review_ids(translated, ReviewsTranslated)) == wanted
