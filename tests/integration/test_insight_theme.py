"""insight + theme on the real stack: Kafka, Postgres, Redis, the fake LLM, both services.

Each test makes its own job (random id) with a `jobs` and a `job_models` row, produces
`ReviewsTranslated` records straight onto `reviews.translated` and watches Postgres:
insights whose quotes are exact substrings at their offsets, a `review_insights` and a
`review_themed` row for every review, semantic themes with members; reviews the fake LLM is told to
answer badly end in `dead_letters` and on `insight.dlq` while the rest complete; and a
kill -9 of the insight service mid-job ends with the same insight rows as a calm run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from ingest_kit import collect, db, end_offsets, prefix, producer, scalar, wait_for

from services.insight.core import insight_id
from shared.events import InsightsExtracted, ReviewsTranslated, TranslatedReview
from shared.topics import INSIGHTS_EXTRACTED, REVIEWS_TRANSLATED, dlq
from voc.stack import Stack

pytestmark = pytest.mark.integration

TIMEOUT = 180.0
TENANT = "it-insight-theme"
DIMENSIONS = [
    {"name": "Battery life", "description": "How long the battery lasts.", "keywords": []},
    {"name": "Price and value", "description": "Worth the money?", "keywords": []},
    {"name": "Sound quality", "description": "Audio, bass, noise.", "keywords": []},
    {"name": "Delivery and shipping", "description": "Shipping and arrival.", "keywords": []},
    {"name": "Size and fit", "description": "How it fits.", "keywords": []},
]
FIVE_W = {
    "who": ["commuters"],
    "what": ["music"],
    "when": ["daily"],
    "where": ["at home"],
    "why": ["gift"],
}
SENTENCES = [
    "The battery lasts {n} hours, which is great.",
    "Battery  charging is slow and annoying.",
    "The price is too high for what you get.",
    "Great value for the money, honestly.",
    "The sound is loud and clear.",
    "Bass is weak and there is noise at volume {n}.",
    "Shipping took {n} days and the box arrived damaged.",
    "It fits well.",
    "The size runs small.",
    "I like it.",
]


def review_text(n: int) -> str:
    """A review of two or three sentences built from the fake LLM's keywords."""
    picks = [SENTENCES[n % 10], SENTENCES[(n * 3 + 1) % 10]]
    if n % 4 == 0:
        picks.append(SENTENCES[(n * 7 + 2) % 10])
    return " ".join(s.format(n=n) for s in picks)


def reviews(job: str, n: int, texts: dict[int, str] | None = None) -> list[TranslatedReview]:
    """`n` reviews of `job` with ids `<job>-<i>`; `texts` overrides some texts."""
    out = []
    for i in range(n):
        text = (texts or {}).get(i, review_text(i))
        out.append(
            TranslatedReview(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job}/{i}")),
                text=text,
                source_language="en",
                translated=False,
                rating=1 + i % 5,
            )
        )
    return out


async def make_job(job: str, tenant: str = TENANT) -> None:
    """The `jobs` and `job_models` rows learn would have written."""
    async with db() as conn:
        await conn.execute(
            "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (tenant,)
        )
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, product, target_language, status)"
            " VALUES (%s, %s, %s, 'en', 'analysing') ON CONFLICT (id) DO NOTHING",
            (job, tenant, "Wireless earbuds"),
        )
        await conn.execute(
            "INSERT INTO job_models (job_id, dimensions, five_w, sample_size, model)"
            " VALUES (%s, %s, %s, 10, 'it') ON CONFLICT (job_id) DO NOTHING",
            (job, orjson.dumps(DIMENSIONS).decode(), orjson.dumps(FIVE_W).decode()),
        )


async def send(job: str, revs: list[TranslatedReview], per_event: int = 50) -> None:
    """Produce the reviews on reviews.translated in events of `per_event`, spread by key."""
    topic = REVIEWS_TRANSLATED.full_name(prefix())
    async with producer() as p:
        for n, start in enumerate(range(0, len(revs), per_event)):
            event = ReviewsTranslated(
                job_id=job, target_language="en", reviews=revs[start : start + per_event]
            )
            await p.send_and_wait(topic, event.to_bytes(), key=f"{job}:{n}".encode())


async def counts(job: str) -> dict[str, int]:
    """Per-stage row counts of a job."""
    async with db() as conn:
        return {
            table: int(await scalar(conn, f"SELECT count(*) FROM {table} WHERE job_id = %s", job))
            for table in ("review_insights", "insights", "themes", "theme_members", "review_themed")
        } | {
            "dead": int(
                await scalar(
                    conn,
                    "SELECT count(*) FROM dead_letters WHERE job_id = %s AND stage = 'insight'",
                    job,
                )
            )
        }


async def wait_done(job: str, n: int, timeout: float = TIMEOUT) -> dict[str, int]:
    """Wait until every review is themed or dead-lettered; returns the final counts."""
    last: dict[str, int] = {}

    async def done() -> bool:
        nonlocal last
        last = await counts(job)
        return (
            last["review_insights"] + last["dead"] == n
            and last["review_themed"] == last["review_insights"]
            and last["theme_members"] == last["insights"]
        )

    assert await wait_for(done, timeout, interval=0.5), f"job {job} stuck at {last}"
    return last


async def fake_llm_config(patch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read (or change) the fake LLM's config through its admin endpoint."""
    url = os.environ["VOC_FAKE_LLM_URL"].rstrip("/") + "/admin/config"
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await (client.post(url, json=patch) if patch is not None else client.get(url))
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc


@pytest.fixture(scope="module")
async def services(stack: dict[str, str], stack_ctl: Stack) -> AsyncIterator[Stack]:
    """insight and theme freshly (re)started on the stack's current env, with the fake LLM."""
    if not os.environ.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    for name in ("insight", "theme"):
        if stack_ctl.service_pid(name) is None:
            await asyncio.to_thread(stack_ctl.start_service, name)
        else:
            await asyncio.to_thread(stack_ctl.restart_service, name)
    yield stack_ctl
    for name in ("insight", "theme"):
        if stack_ctl.service_pid(name) is None:
            await asyncio.to_thread(stack_ctl.start_service, name)


async def insight_rows(job: str) -> list[tuple[Any, ...]]:
    """The job's insights joined with nothing: id, review, offsets, quote, dimension ..."""
    async with db() as conn:
        cur = await conn.execute(
            "SELECT id, review_id, quote, quote_start, quote_end, dimension, aspect, sentiment,"
            " score, five_w FROM insights WHERE job_id = %s ORDER BY review_id, id",
            (job,),
        )
        return await cur.fetchall()


async def test_reviews_get_insights_with_exact_quotes_and_themes(services: Stack) -> None:
    job = str(uuid.uuid4())
    await make_job(job)
    texts = {7: "...", 8: "Je ne sais pas."}  # no sentence / nothing matching: 0 or 1 "other"
    revs = reviews(job, 120, texts)
    by_id = {r.id: r for r in revs}
    since = await end_offsets(INSIGHTS_EXTRACTED.full_name(prefix()))
    await send(job, revs, per_event=40)
    final = await wait_done(job, len(revs))

    assert final["dead"] == 0
    assert final["review_insights"] == final["review_themed"] == len(revs)
    rows = await insight_rows(job)
    assert len(rows) == final["insights"] > len(revs)
    names = {d["name"] for d in DIMENSIONS} | {"other"}
    per_review: dict[str, int] = {}
    for _iid, rid, quote, start, end, dimension, aspect, sentiment, score, five_w in rows:
        text = by_id[rid].text
        assert quote and text[start:end] == quote, (rid, quote, start, end)
        assert dimension in names and aspect
        assert sentiment in ("positive", "negative", "neutral") and -1 <= score <= 1
        assert set(five_w) == {"who", "what", "when", "where", "why"}
        per_review[rid] = per_review.get(rid, 0) + 1
    # ids are uuid5(review, 0..n-1) and n_insights matches the rows
    assert {r[0] for r in rows} == {
        insight_id(rid, k) for rid, n in per_review.items() for k in range(n)
    }
    async with db() as conn:
        cur = await conn.execute(
            "SELECT review_id, n_insights FROM review_insights WHERE job_id = %s", (job,)
        )
        stored = dict(await cur.fetchall())
        assert stored == {r.id: per_review.get(r.id, 0) for r in revs}
        assert stored[revs[7].id] == 0
        # every member points at a theme of the job; themes are named and keyed
        orphans = await scalar(
            conn,
            "SELECT count(*) FROM theme_members m LEFT JOIN themes t ON t.id = m.theme_id"
            " WHERE m.job_id = %s AND (t.id IS NULL OR t.job_id <> m.job_id)",
            job,
        )
        assert orphans == 0
        cur = await conn.execute(
            "SELECT t.dimension, t.key, t.name, count(m.insight_id) FROM themes t"
            " LEFT JOIN theme_members m ON m.theme_id = t.id WHERE t.job_id = %s"
            " GROUP BY 1, 2, 3",
            (job,),
        )
        themes = await cur.fetchall()
    assert themes and all(name and n > 0 for _, _, name, n in themes)
    # themes are semantic (tests/integration/test_semantic_themes.py): a dimension's
    # insights share a few themes - by what they say, not by how the aspect is spelled
    per_dimension = Counter(d for d, _, _, _ in themes)
    assert max(per_dimension.values()) <= 4, per_dimension

    # the event stream carries every review and insight once (replays aside)
    def mine(rec: Any) -> bool:
        return bool(rec.key == job.encode())

    def all_seen(recs: list[Any]) -> bool:
        seen = {
            r for rec in recs for r in InsightsExtracted.model_validate_json(rec.value).review_ids
        }
        return seen >= set(by_id)

    recs = await collect(since, mine, all_seen, timeout=30)
    assert all_seen(recs)


@pytest.mark.parametrize("fault", ["bad_quote_rate", "malformed_rate"])
async def test_reviews_the_llm_keeps_failing_are_dead_lettered_alone(
    services: Stack, fault: str
) -> None:
    job = str(uuid.uuid4())
    marker = f"ZQXFAULT{uuid.uuid4().hex[:8]}"
    await make_job(job)
    bad = {3, 17, 18, 41}
    texts = {i: f"{review_text(i)} {marker}" for i in bad}
    revs = reviews(job, 60, texts)
    dlq_since = await end_offsets(dlq("insight").full_name(prefix()))
    before = await fake_llm_config()
    await fake_llm_config({fault: 1.0, "fault_match": marker})
    try:
        await send(job, revs, per_event=20)
        final = await wait_done(job, len(revs))
    finally:
        await fake_llm_config({fault: before.get(fault, 0.0), "fault_match": before["fault_match"]})

    bad_ids = {revs[i].id for i in bad}
    assert final["dead"] == len(bad)
    assert final["review_insights"] == final["review_themed"] == len(revs) - len(bad)
    async with db() as conn:
        cur = await conn.execute(
            "SELECT review_id, error_type, error, topic FROM dead_letters"
            " WHERE job_id = %s AND stage = 'insight'",
            (job,),
        )
        dead = {rid: (etype, err, topic) for rid, etype, err, topic in await cur.fetchall()}
        done = await scalar(
            conn,
            "SELECT count(*) FROM review_insights WHERE job_id = %s AND review_id = ANY(%s)",
            job,
            list(bad_ids),
        )
    assert set(dead) == bad_ids and done == 0
    assert {etype for etype, _, _ in dead.values()} == {"LLMMalformedOutput"}
    assert all(topic == REVIEWS_TRANSLATED.full_name(prefix()) for _, _, topic in dead.values())

    def on_dlq(rec: Any) -> bool:
        return dict(rec.headers or ()).get("voc-job-id") == job.encode()

    recs = await collect(dlq_since, on_dlq, lambda r: len(r) >= len(bad), timeout=30)
    assert {dict(r.headers)["voc-review-id"].decode() for r in recs} == bad_ids
    for rec in recs:  # each DLQ record is a redrivable ReviewsTranslated of that review alone
        event = ReviewsTranslated.model_validate_json(rec.value)
        assert [r.id for r in event.reviews] == [dict(rec.headers)["voc-review-id"].decode()]
        assert dict(rec.headers)["voc-error-type"] == b"LLMMalformedOutput"


async def test_kill9_of_insight_mid_job_gives_the_rows_of_a_calm_run(services: Stack) -> None:
    n = 1200
    calm, killed = str(uuid.uuid4()), str(uuid.uuid4())
    for job in (calm, killed):
        await make_job(job)
    calm_reviews, killed_reviews = reviews(calm, n), reviews(killed, n)
    await send(calm, calm_reviews)
    await wait_done(calm, n)

    await send(killed, killed_reviews)

    async def progressed() -> bool:
        return (await counts(killed))["review_insights"] >= n * 0.3

    assert await wait_for(progressed, TIMEOUT, interval=0.05)
    await asyncio.to_thread(services.kill_service, "insight")
    at_kill = (await counts(killed))["review_insights"]
    assert at_kill < n, "the job finished before the kill; make it bigger"
    await asyncio.sleep(1.0)  # a little backlog while it is down
    await asyncio.to_thread(services.start_service, "insight")
    final = await wait_done(killed, n)
    assert final["dead"] == 0 and final["review_insights"] == n

    # Same input, same rows: position i of each job has the same insights, under ids
    # derived from that job's review id.
    def keyed(rows: list[tuple[Any, ...]], revs: list[TranslatedReview]) -> set[tuple[Any, ...]]:
        pos = {r.id: i for i, r in enumerate(revs)}
        return {(pos[rid], *rest[:-1], tuple(sorted(rest[-1].items()))) for _, rid, *rest in rows}

    calm_rows, killed_rows = await insight_rows(calm), await insight_rows(killed)
    assert len(killed_rows) == len(calm_rows)
    assert keyed(killed_rows, killed_reviews) == keyed(calm_rows, calm_reviews)
    per_pos: dict[int, int] = {}
    calm_pos = {r.id: i for i, r in enumerate(calm_reviews)}
    for _, rid, *_rest in calm_rows:
        per_pos[calm_pos[rid]] = per_pos.get(calm_pos[rid], 0) + 1
    assert {r[0] for r in killed_rows} == {
        insight_id(killed_reviews[i].id, k) for i, c in per_pos.items() for k in range(c)
    }
    assert (await counts(killed))["theme_members"] == len(killed_rows)
