"""Helpers of the report-stage integration tests: jobs whose stage rows are written directly.

`seed_job` writes what the API and the stages before report would have stored for a sealed
job of `n` reviews (half English, half German), `themed` of them through every stage and
`dead` dead-lettered at insight; `theme_rest` finishes the others later, as the theme
stage would. Every job has a random id and its own product name, so the report LLM call
of one job is never answered from the cache by another's.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared.db.pool import ConnectionPool

TENANT = "report-it"


async def execute(pool: ConnectionPool, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction; its rows, if it returns any."""
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall() if cur.description else []
        await conn.commit()
        return rows


async def _theme_review(conn: psycopg.AsyncConnection[Any], job: str, rid: str, text: str) -> None:
    """The insight and theme rows of one review: a negative battery and a positive fit."""
    await conn.execute(
        "INSERT INTO review_insights (review_id, job_id, n_insights) VALUES (%s, %s, 2)",
        (rid, job),
    )
    for k, (dim, sent, score, quote) in enumerate(
        [
            ("battery", "negative", -0.8, "battery dies fast"),
            ("fit", "positive", 0.7, "they fit well"),
        ]
    ):
        iid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{rid}:{k}"))
        theme = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job}:{dim}"))
        start = text.index(quote)
        await conn.execute(
            "INSERT INTO insights (id, job_id, review_id, dimension, aspect, sentiment, "
            "score, quote, quote_start, quote_end, five_w) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                iid,
                job,
                rid,
                dim,
                dim + " aspect",
                sent,
                score,
                quote,
                start,
                start + len(quote),
                Jsonb({"who": "runner"}),
            ),
        )
        await conn.execute(
            "INSERT INTO themes (id, job_id, dimension, key, name, description) VALUES "
            "(%s, %s, %s, %s, %s, 'd') ON CONFLICT DO NOTHING",
            (theme, job, dim, dim, f"{dim} theme"),
        )
        await conn.execute(
            "INSERT INTO theme_members (insight_id, theme_id, job_id, review_id) "
            "VALUES (%s, %s, %s, %s)",
            (iid, theme, job, rid),
        )
    await conn.execute("INSERT INTO review_themed (review_id, job_id) VALUES (%s, %s)", (rid, job))


async def seed_job(
    pool: ConnectionPool,
    n: int,
    themed: int,
    dead: int,
    callback: str | None,
    product: str | None = None,
) -> str:
    """A sealed job of n reviews, `themed` of them through and `dead` dead-lettered."""
    job = str(uuid.uuid4())
    product = product or f"Buds {job[:8]}"
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING", (TENANT,))
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, product, target_language, callback_url, status, "
            "submitted, sealed_at) VALUES (%s, %s, %s, 'en', %s, 'sealed', %s, now())",
            (job, TENANT, product, callback, n),
        )
        await conn.execute(
            "INSERT INTO ingest_chunks (id, job_id, rows, accepted, duplicates, rejected) "
            "VALUES (%s, %s, %s, %s, 0, 0)",
            (f"{job}:0", job, n, n),
        )
        await conn.execute(
            "INSERT INTO job_models (job_id, dimensions, five_w, sample_size, model) VALUES "
            "(%s, %s, %s, %s, 'fake')",
            (
                job,
                Jsonb(
                    [{"name": "battery", "description": "b"}, {"name": "fit", "description": "f"}]
                ),
                Jsonb({"who": ["commuters"]}),
                n,
            ),
        )
        for i in range(n):
            rid = str(uuid.uuid4())
            lang = "en" if i % 2 == 0 else "de"
            text = f"Review {i}: battery dies fast but they fit well"
            await conn.execute(
                "INSERT INTO reviews (id, job_id, origin, text, rating, language, created_at_src)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (rid, job, f"u:0:{i}", text, 1 + i % 5, lang, f"2024-01-{1 + i % 28:02d}T00:00:00"),
            )
            await conn.execute(
                "INSERT INTO translations (review_id, job_id, source_language, target_language, "
                "text, translated) VALUES (%s, %s, %s, 'en', %s, %s)",
                (rid, job, lang, text, lang != "en"),
            )
            if i < themed:
                await _theme_review(conn, job, rid, text)
            elif i < themed + dead:
                await conn.execute(
                    "INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "
                    "\"offset\", error_type, error) VALUES (%s, 'insight', %s, %s, 't', 0, 0, "
                    "'LLMMalformedOutput', 'junk')",
                    (f"insight:{rid}", job, rid),
                )
        await conn.commit()
    return job


async def theme_rest(pool: ConnectionPool, job: str) -> int:
    """Theme every review of `job` that is neither themed nor dead-lettered; how many."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.id, r.text FROM reviews r WHERE r.job_id = %s AND NOT EXISTS "
            "(SELECT 1 FROM review_themed t WHERE t.review_id = r.id) AND NOT EXISTS "
            "(SELECT 1 FROM dead_letters d WHERE d.review_id = r.id) ORDER BY r.id",
            (job,),
        )
        rows = await cur.fetchall()
        for rid, text in rows:
            await _theme_review(conn, job, rid, text)
        await conn.commit()
    return len(rows)


async def job_state(
    pool: ConnectionPool, job: str
) -> tuple[str, str | None, dict[str, Any] | None]:
    """(jobs.status, reports.status, reports.data) of `job`."""
    rows = await execute(
        pool,
        "SELECT j.status, r.status, r.data FROM jobs j LEFT JOIN reports r ON r.job_id = j.id "
        "WHERE j.id = %s",
        (job,),
    )
    return rows[0][0], rows[0][1], rows[0][2]
