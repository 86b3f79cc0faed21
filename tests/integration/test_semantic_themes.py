"""Semantic themes on the real stack: the theme service with Kafka, Postgres, Redis and the
fake LLM's embeddings (real `openai` client, real shared limiter and cache).

1. Insights about sound in English, French and Japanese ("sound", "son", "音") land in one
   theme; a battery insight and a sound complaint do not.
2. A replayed record (the same `insights.extracted` records produced again) changes no
   row, costs no embedding call, and lands every insight in the theme it had.
3. A job of many records is consolidated: merges are recorded and resolve, the theme
   count stays in the tens, a dimension -> theme hierarchy holds.
4. kill -9 of the theme service mid-job gives the memberships of a calm run of the same
   input (ids aside): how a restart cuts the stream into batches changes nothing. (3 and 4
   run with strict assignment, so that there are near-duplicates to merge.)

Records go straight onto `insights.extracted`, keyed by job like the insight stage does,
so the order the theme stage sees is fixed by the test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ingest_kit import db, prefix, producer, scalar, wait_for

from shared.events import Insight, InsightsExtracted
from shared.topics import INSIGHTS_EXTRACTED
from voc.stack import Stack

pytestmark = pytest.mark.integration

TIMEOUT = 180.0
TENANT = "it-semantic-themes"


@pytest.fixture(scope="module")
async def theme_service(stack: dict[str, str], stack_ctl: Stack) -> AsyncIterator[Stack]:
    """The theme service (re)started on the stack's current code and env."""
    if not os.environ.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    if stack_ctl.service_pid("theme") is None:
        await asyncio.to_thread(stack_ctl.start_service, "theme")
    else:
        await asyncio.to_thread(stack_ctl.restart_service, "theme")
    yield stack_ctl
    if stack_ctl.service_pid("theme") is None:
        await asyncio.to_thread(stack_ctl.start_service, "theme")


# Strict assignment opens many near-duplicate themes, which consolidation must then merge
# (the default thresholds rarely leave duplicates in this small vocabulary).
STRICT = {"VOC_THEME_ASSIGN_THRESHOLD": "0.97", "VOC_THEME_CONSOLIDATE_EVERY": "50"}


@pytest.fixture
async def strict_theme_service(theme_service: Stack) -> AsyncIterator[Stack]:
    """The theme service restarted with `STRICT` clustering, restored afterwards."""
    os.environ.update(STRICT)
    try:
        await asyncio.to_thread(theme_service.restart_service, "theme")
        yield theme_service
    finally:
        for key in STRICT:
            os.environ.pop(key, None)
        if theme_service.service_pid("theme") is None:
            await asyncio.to_thread(theme_service.start_service, "theme")
        else:
            await asyncio.to_thread(theme_service.restart_service, "theme")


async def make_job(job: str) -> None:
    async with db() as conn:
        await conn.execute(
            "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (TENANT,)
        )
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, product, target_language, status)"
            " VALUES (%s, %s, 'Earbuds', 'en', 'analysing') ON CONFLICT (id) DO NOTHING",
            (job, TENANT),
        )


def insight(
    job: str, n: int, k: int, aspect: str, quote: str, dim: str, tr: str | None = None
) -> Insight:
    review = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job}/r{n}"))
    return Insight(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job}/r{n}/{k}")),
        review_id=review,
        dimension=dim,
        aspect=aspect,
        sentiment="negative" if "terrible" in quote else "positive",
        score=-0.7 if "terrible" in quote else 0.6,
        quote=quote,
        quote_start=0,
        quote_end=len(quote),
        quote_translation=tr,
    )


def record(job: str, insights: list[Insight]) -> InsightsExtracted:
    return InsightsExtracted(
        job_id=job, review_ids=list(dict.fromkeys(i.review_id for i in insights)), insights=insights
    )


async def send(records: list[InsightsExtracted]) -> None:
    topic = INSIGHTS_EXTRACTED.full_name(prefix())
    async with producer() as p:
        for r in records:
            await p.send_and_wait(topic, r.to_bytes(), key=r.job_id.encode())


async def themed(job: str) -> int:
    async with db() as conn:
        return int(await scalar(conn, "SELECT count(*) FROM review_themed WHERE job_id = %s", job))


async def wait_themed(job: str, n: int) -> None:
    async def done() -> bool:
        return await themed(job) >= n

    assert await wait_for(done, TIMEOUT, interval=0.3), f"job {job}: {await themed(job)}/{n}"


async def memberships(job: str) -> dict[str, str]:
    """insight id -> its theme, resolved through the merges."""
    async with db() as conn:
        cur = await conn.execute(
            "SELECT m.insight_id, coalesce(g.into_id, m.theme_id) FROM theme_members m"
            " LEFT JOIN theme_merges g ON g.theme_id = m.theme_id WHERE m.job_id = %s",
            (job,),
        )
        return dict(await cur.fetchall())


async def table_snapshot(job: str) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "themes": "SELECT id, name, size, centroid, sample::text FROM themes WHERE job_id = %s"
        " ORDER BY id",
        "members": "SELECT insight_id, theme_id FROM theme_members WHERE job_id = %s ORDER BY 1",
        "merges": "SELECT theme_id, into_id, at_insight FROM theme_merges WHERE job_id = %s"
        " ORDER BY 1",
        "state": "SELECT version, placed, opened FROM theme_jobs WHERE job_id = %s",
    }
    async with db() as conn:
        out = {}
        for name, sql in queries.items():
            cur = await conn.execute(sql, (job,))
            out[name] = await cur.fetchall()
        return out


def embed_calls() -> int:
    url = os.environ["VOC_FAKE_LLM_URL"].rstrip("/") + "/stats"
    stats = httpx.get(url, timeout=10).json()
    return int((stats.get("by_stage") or {}).get("embed", {}).get("requests", 0))


async def test_sound_son_and_oto_share_a_theme_and_replays_change_nothing(
    theme_service: Stack,
) -> None:
    job = str(uuid.uuid4())
    await make_job(job)
    tag = job[:8]  # new texts each run: the embedding cache cannot answer
    records = [
        record(job, [insight(job, 0, 0, "sound", f"The sound is great {tag}.", "Sound quality")]),
        record(
            job,
            [
                insight(
                    job,
                    1,
                    0,
                    "son",
                    f"Le son est génial {tag}.",
                    "Sound quality",
                    tr=f"[fr->en] Le son est génial {tag}.",
                )
            ],
        ),
        record(
            job,
            [
                insight(job, 2, 0, "音", f"音がとても良い {tag}。", "Sound quality"),
                insight(job, 2, 1, "battery", f"The battery is great {tag}.", "Battery life"),
            ],
        ),
        record(
            job, [insight(job, 3, 0, "sound", f"The sound is terrible {tag}.", "Sound quality")]
        ),
    ]
    await send(records)
    await wait_themed(job, 4)
    theme_of = await memberships(job)
    ids = [i.id for r in records for i in r.insights]
    sound, son, oto, battery, complaint = (theme_of[i] for i in ids)
    assert sound == son == oto, "sound, son and 音 must share one theme"
    assert battery != sound and complaint != sound
    async with db() as conn:
        name = await scalar(conn, "SELECT name FROM themes WHERE id = %s", sound)
        dim = await scalar(conn, "SELECT dimension FROM themes WHERE id = %s", sound)
    assert name and dim == "Sound quality"

    # The same records again: nothing changes, nothing is embedded again. A record without
    # insights after them (same job, same partition) tells when they have gone through.
    before, calls = await table_snapshot(job), embed_calls()
    marker = InsightsExtracted(job_id=job, review_ids=[str(uuid.uuid4())], insights=[])
    await send([*records, marker])
    await wait_themed(job, 5)
    assert await table_snapshot(job) == before
    assert await memberships(job) == theme_of
    assert embed_calls() == calls


def stream(job: str, n: int) -> list[InsightsExtracted]:
    """`n` records over a few concepts, languages and sentiments (deterministic)."""
    phrases = [
        ("sound", "The sound is great", "Sound quality", None),
        ("son", "Le son est terrible", "Sound quality", "[fr->en] Le son est terrible"),
        ("Klang", "Der Klang ist gut", "Sound quality", "[de->en] Der Klang ist gut"),
        ("battery", "The battery is great", "Battery life", None),
        ("akku", "Der Akku ist terrible", "Battery life", "[de->en] Der Akku ist terrible"),
        ("precio", "Buen precio", "Price and value", "[es->en] Buen precio"),
        ("price", "The price is terrible", "Price and value", None),
        ("general", "Ok", "other", None),
        ("fit", "It fits great", "Size and fit", None),
    ]
    out = []
    for r in range(n):
        ins = []
        for k in range(1 + r % 3):
            aspect, quote, dim, tr = phrases[(r * 5 + k * 2) % len(phrases)]
            variant = f" #{(r * 7 + k) % 11} {job[:8]}"
            ins.append(insight(job, r, k, aspect, quote + variant, dim, tr and tr + variant))
        out.append(record(job, ins))
    return out


def canonical(records: list[InsightsExtracted], theme_of: dict[str, str]) -> list[int]:
    """Each insight's theme as the order of first appearance: comparable across jobs."""
    labels: dict[str, int] = {}
    return [labels.setdefault(theme_of[i.id], len(labels)) for r in records for i in r.insights]


async def test_consolidation_bounds_themes_and_kill9_changes_no_membership(
    strict_theme_service: Stack,
) -> None:
    theme_service = strict_theme_service
    n = 400
    calm, killed = str(uuid.uuid4()), str(uuid.uuid4())
    for job in (calm, killed):
        await make_job(job)
    calm_records = stream(calm, n)
    await send(calm_records)
    await wait_themed(calm, n)

    async with db() as conn:
        placed = await scalar(conn, "SELECT placed FROM theme_jobs WHERE job_id = %s", calm)
        merges = await scalar(conn, "SELECT count(*) FROM theme_merges WHERE job_id = %s", calm)
        cur = await conn.execute(
            "SELECT t.dimension, count(*) FROM themes t WHERE t.job_id = %s AND NOT EXISTS"
            " (SELECT 1 FROM theme_merges g WHERE g.theme_id = t.id) GROUP BY 1",
            (calm,),
        )
        per_dim = dict(await cur.fetchall())
        orphans = await scalar(
            conn,
            "SELECT count(*) FROM theme_merges g JOIN theme_merges h ON h.theme_id = g.into_id"
            " WHERE g.job_id = %s",
            calm,
        )
    insights = sum(len(r.insights) for r in calm_records)
    assert placed == insights
    assert merges > 0, "consolidation must have merged near-duplicates"
    assert orphans == 0, "merge chains are compressed: a survivor is never merged"
    assert set(per_dim) == {
        "Sound quality",
        "Battery life",
        "Price and value",
        "other",
        "Size and fit",
    }
    assert 5 <= sum(per_dim.values()) <= 40, per_dim
    calm_themes = await memberships(calm)
    assert len(calm_themes) == insights

    killed_records = stream(killed, n)
    # The last 30% go out only once theme is dead: a fast machine themes the
    # whole job between two polls, and the kill must land mid-job every time.
    head, tail = killed_records[: int(n * 0.7)], killed_records[int(n * 0.7) :]
    await send(head)

    async def progressed() -> bool:
        return await themed(killed) >= n * 0.3

    assert await wait_for(progressed, TIMEOUT, interval=0.05)
    await asyncio.to_thread(theme_service.kill_service, "theme")
    assert await themed(killed) < n
    await send(tail)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(theme_service.start_service, "theme")
    await wait_themed(killed, n)
    killed_themes = await memberships(killed)
    assert canonical(killed_records, killed_themes) == canonical(calm_records, calm_themes)
