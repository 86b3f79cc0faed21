"""Helpers of the learn/translate integration tests: jobs, reviews, events, fake-LLM stats.

Jobs and reviews are written straight into Postgres (what the API and ingest would have
stored), then `ReviewsIngested` events are produced on `reviews.ingested`, as ingest would.
Every job has a random id and every text a per-job marker, so tests never see each other's
rows or each other's cached LLM answers.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
from ingest_kit import db, prefix, producer, scalar

from shared.events import Review, ReviewsIngested
from shared.topics import REVIEWS_INGESTED

TENANT = "it-learn-translate"

# Short review sentences per language, written for these tests.
PHRASES: dict[str, list[str]] = {
    "en": [
        "The battery lasts all day and the sound is very clear.",
        "It stopped working after two weeks, which is disappointing.",
        "Good value for the price and the delivery was fast.",
        "The case feels cheap but it does the job.",
        "I bought this as a gift and my brother loves it.",
    ],
    "de": [
        "Der Akku hält den ganzen Tag und der Klang ist sehr klar.",
        "Nach zwei Wochen ging es kaputt, das ist leider enttäuschend.",
        "Gutes Preis-Leistungs-Verhältnis und die Lieferung war schnell.",
        "Das Gehäuse wirkt billig, aber es erfüllt seinen Zweck.",
    ],
    "fr": [
        "La batterie tient toute la journée et le son est très clair.",
        "Il a cessé de fonctionner après deux semaines, je suis déçu.",
        "Bon rapport qualité prix et la livraison était rapide.",
    ],
    "es": [
        "La batería dura todo el día y el sonido es muy claro.",
        "Dejó de funcionar después de dos semanas, es una pena.",
        "Buena relación calidad precio y el envío fue rápido.",
    ],
    "ja": [
        "バッテリーは一日中持ち、音もとてもクリアです。",
        "二週間で動かなくなりました。残念です。",
        "値段の割に良い商品で、配送も早かったです。",
    ],
}
LANGS = ["en", "de", "en", "fr", "es", "de", "ja", "en"]  # about 3/8 English


def review_id(job: str, i: int) -> str:
    """The deterministic id of a job's i-th test review."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job}/{i}"))


def make_reviews(job: str, n: int) -> list[Review]:
    """`n` short reviews in several languages; each text carries a number and a job marker.

    The row's `language` is left empty, so translate has to detect it.
    """
    # Digits only: letters of a random id (hex) could tip the language detection of a
    # short phrase (it failed one job in ~25 so), and then the model's guess decides.
    marker = uuid.uuid5(uuid.NAMESPACE_URL, job).int % 10**10
    out = []
    for i in range(n):
        lang = LANGS[i % len(LANGS)]
        phrases = PHRASES[lang]
        text = f"{phrases[i % len(phrases)]} ({i}/{marker})"
        out.append(Review(id=review_id(job, i), text=text, rating=1 + i % 5))
    return out


def language_of(i: int) -> str:
    """The language `make_reviews` wrote review i in."""
    return LANGS[i % len(LANGS)]


async def make_job(job: str, target_language: str = "en", product: str = "Earbuds") -> None:
    """A `jobs` row as the API creates it (not sealed)."""
    async with db() as conn:
        await conn.execute(
            "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (TENANT,)
        )
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, product, target_language, status)"
            " VALUES (%s, %s, %s, %s, 'receiving') ON CONFLICT (id) DO NOTHING",
            (job, TENANT, product, target_language),
        )


async def seal(job: str) -> None:
    """Seal the job, as `POST /v1/jobs/{id}/seal` does."""
    async with db() as conn:
        await conn.execute("UPDATE jobs SET sealed_at = now() WHERE id = %s", (job,))


async def store_reviews(job: str, reviews: list[Review]) -> None:
    """The `reviews` rows ingest would have upserted."""
    async with db() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO reviews (id, job_id, origin, text, rating, language)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            [(r.id, job, f"it:0:{i}", r.text, r.rating, r.language) for i, r in enumerate(reviews)],
        )


async def send_ingested(
    job: str, reviews: list[Review], per_event: int = 50, first: int = 0
) -> int:
    """Produce the reviews on `reviews.ingested` in events of `per_event`; returns events sent."""
    topic = REVIEWS_INGESTED.full_name(prefix())
    n = 0
    async with producer() as p:
        for start in range(0, len(reviews), per_event):
            event = ReviewsIngested(job_id=job, reviews=reviews[start : start + per_event])
            await p.send_and_wait(topic, event.to_bytes(), key=f"{job}:{first + n}".encode())
            n += 1
    return n


async def count(table: str, job: str) -> int:
    """Rows of `table` for `job`."""
    async with db() as conn:
        return int(await scalar(conn, f"SELECT count(*) FROM {table} WHERE job_id = %s", job))


async def held_reviews(job: str) -> int:
    """Reviews of `job` held in `learn_pending`."""
    async with db() as conn:
        n = await scalar(
            conn,
            "SELECT coalesce(sum(jsonb_array_length(reviews)), 0) FROM learn_pending"
            " WHERE job_id = %s",
            job,
        )
        return int(n)


async def translations(job: str) -> dict[str, tuple[str, str, str, bool]]:
    """review id -> (source language, target language, text, translated)."""
    async with db() as conn:
        cur = await conn.execute(
            "SELECT review_id, source_language, target_language, text, translated"
            " FROM translations WHERE job_id = %s",
            (job,),
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in await cur.fetchall()}


async def job_model(job: str) -> tuple[Any, ...] | None:
    """The job's `job_models` row: (sample_size, model, created_at, dimension names)."""
    async with db() as conn:
        cur = await conn.execute(
            "SELECT sample_size, model, created_at, dimensions FROM job_models WHERE job_id = %s",
            (job,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return row[0], row[1], row[2], [d["name"] for d in row[3]]


def llm_calls(stage: str) -> int:
    """Requests the fake LLM has received for `stage` (all tests of the stack together)."""
    url = os.environ["VOC_FAKE_LLM_URL"].rstrip("/") + "/stats"
    stats = httpx.get(url, timeout=5).json()
    return int(stats.get("by_stage", {}).get(stage, {}).get("requests", 0))
