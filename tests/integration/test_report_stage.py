"""The report stage's SQL and rows against the real Postgres (no Kafka, fake LLM port).

A random job's stage rows are written directly, then `ReportHandler.check_jobs` decides,
aggregates and returns the rows the runner would upsert; they are upserted here the way
the runner does, so the job status, report and outbox rows are checked as stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from pydantic import BaseModel

from services.report.service import PgReportStore, ReportHandler
from services.report.settings import ReportSettings
from shared.db.pool import ConnectionPool
from shared.db.upsert import upsert
from shared.llm.errors import LLMMalformedOutput
from shared.llm.prompts import PromptTemplate
from shared.settings import DatabaseSettings
from shared.stage import StageResult

T = TypeVar("T", bound=BaseModel)


class FakeLLM:
    """Answers the report prompt from its input, or fails when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    async def complete(
        self,
        stage: str,
        prompt: PromptTemplate,
        input: dict[str, Any],
        output_model: type[T],
        *,
        job_id: str | None = None,
        cache: bool = True,
        validate: Callable[[T], None] | None = None,
    ) -> T:
        self.calls.append(input)
        if self.fail:
            raise LLMMalformedOutput("junk", stage=stage, attempts=3)
        worst = min(input["aggregates"]["sentiment_by_dimension"], key=lambda d: d["score"])
        return output_model.model_validate(
            {
                "summary": f"Worst: {worst['name']}.",
                "recommended_actions": [
                    {
                        "title": f"Fix {worst['name']}",
                        "detail": "d",
                        "priority": "high",
                        "evidence": "e",
                    }
                ],
            }
        )


@pytest.fixture(scope="module")
def no_report_service(stack: Any) -> Iterator[None]:
    """Stop the stack's report service meanwhile: its tick would build these jobs too."""
    running = stack.service_pid("report") is not None
    if running:
        stack.stop_service("report")
    yield
    if running:
        stack.start_service("report")


@pytest.fixture
async def pool(no_report_service: None) -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(DatabaseSettings().libpq_url(), size=2)
    await p.open()
    yield p
    await p.close()


async def _exec(pool: ConnectionPool, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall() if cur.description else []
        await conn.commit()
        return rows


async def _sink(pool: ConnectionPool, result: StageResult) -> None:
    async with pool.connection() as conn:
        for spec, rows in result.upserts:
            if rows:
                await upsert(conn, spec, rows)
        await conn.commit()


async def _seed_job(
    pool: ConnectionPool, n: int, themed: int, dead: int, callback: str | None
) -> str:
    """A sealed job of n reviews (half English, half German), `themed` of them through."""
    job = str(uuid.uuid4())
    tenant = "report-it"
    await _exec(pool, "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    await _exec(
        pool,
        "INSERT INTO jobs (id, tenant_id, product, target_language, callback_url, status, "
        "submitted, sealed_at) VALUES (%s, %s, 'Buds', 'en', %s, 'sealed', %s, now())",
        (job, tenant, callback, n),
    )
    await _exec(
        pool,
        "INSERT INTO ingest_chunks (id, job_id, rows, accepted, duplicates, rejected) "
        "VALUES (%s, %s, %s, %s, 0, 0)",
        (f"{job}:0", job, n, n),
    )
    await _exec(
        pool,
        "INSERT INTO job_models (job_id, dimensions, five_w, sample_size, model) VALUES "
        "(%s, %s, %s, %s, 'fake')",
        (
            job,
            psycopg.types.json.Jsonb(
                [{"name": "battery", "description": "b"}, {"name": "fit", "description": "f"}]
            ),
            psycopg.types.json.Jsonb({"who": ["commuters"]}),
            n,
        ),
    )
    for i in range(n):
        rid = str(uuid.uuid4())
        lang = "en" if i % 2 == 0 else "de"
        text = f"Review {i}: battery dies fast but they fit well"
        rating = 1 + i % 5
        await _exec(
            pool,
            "INSERT INTO reviews (id, job_id, origin, text, rating, language, created_at_src) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (rid, job, f"u:0:{i}", text, rating, lang, f"2024-01-{1 + i % 28:02d}T00:00:00"),
        )
        await _exec(
            pool,
            "INSERT INTO translations (review_id, job_id, source_language, target_language, "
            "text, translated) VALUES (%s, %s, %s, 'en', %s, %s)",
            (rid, job, lang, text, lang != "en"),
        )
        if i < themed:
            await _exec(
                pool,
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
                await _exec(
                    pool,
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
                        psycopg.types.json.Jsonb({"who": "runner"}),
                    ),
                )
                await _exec(
                    pool,
                    "INSERT INTO themes (id, job_id, dimension, key, name, description) VALUES "
                    "(%s, %s, %s, %s, %s, 'd') ON CONFLICT DO NOTHING",
                    (theme, job, dim, dim, f"{dim} theme"),
                )
                await _exec(
                    pool,
                    "INSERT INTO theme_members (insight_id, theme_id, job_id, review_id) "
                    "VALUES (%s, %s, %s, %s)",
                    (iid, theme, job, rid),
                )
            await _exec(
                pool, "INSERT INTO review_themed (review_id, job_id) VALUES (%s, %s)", (rid, job)
            )
        elif i < themed + dead:
            await _exec(
                pool,
                "INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "
                "\"offset\", error_type, error) VALUES (%s, 'insight', %s, %s, 't', 0, 0, "
                "'LLMMalformedOutput', 'junk')",
                (f"insight:{rid}", job, rid),
            )
    return job


def _handler(pool: ConnectionPool, llm: FakeLLM) -> ReportHandler:
    return ReportHandler(
        PgReportStore(pool),
        llm,
        ReportSettings(public_api_url="http://api.example"),
        "voc.",
    )


async def test_report_ready_then_completed_with_status_report_and_outbox(
    pool: ConnectionPool,
) -> None:
    job = await _seed_job(pool, n=20, themed=18, dead=0, callback="https://hooks.example.com/h")
    llm = FakeLLM()
    handler = _handler(pool, llm)

    result = await handler.check_jobs([job])
    assert len(result.events) == 1
    await _sink(pool, result)
    status, report_status, coverage = (
        await _exec(
            pool,
            "SELECT j.status, r.status, r.coverage FROM jobs j JOIN reports r ON r.job_id = j.id "
            "WHERE j.id = %s",
            (job,),
        )
    )[0]
    assert (status, report_status, coverage) == ("report_ready", "report_ready", 0.9)
    # Same counts again: nothing to do (no second build, no second event).
    assert not (await _handler(pool, llm).check_jobs([job])).events

    # The last two reviews: one dead-lettered, one still missing -> not complete yet.
    rows = await _exec(
        pool,
        "SELECT r.id FROM reviews r WHERE r.job_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM review_themed t WHERE t.review_id = r.id) ORDER BY r.id",
        (job,),
    )
    await _exec(
        pool,
        'INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "offset", '
        "error_type, error) VALUES (%s, 'translate', %s, %s, 't', 0, 0, 'X', 'x')",
        (f"translate:{rows[0][0]}", job, rows[0][0]),
    )
    assert not (await handler.check_jobs([job])).events
    await _exec(
        pool,
        'INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "offset", '
        "error_type, error) VALUES (%s, 'insight', %s, %s, 't', 0, 0, 'X', 'x')",
        (f"insight:{rows[1][0]}", job, rows[1][0]),
    )
    final = await handler.check_jobs([job])
    assert len(final.events) == 1
    await _sink(pool, final)
    ((status, doc),) = await _exec(
        pool,
        "SELECT j.status, r.data FROM jobs j JOIN reports r ON r.job_id = j.id WHERE j.id = %s",
        (job,),
    )
    assert status == "completed"
    assert doc["status"] == "completed" and doc["final"] is True
    assert doc["coverage"] == {
        "ratio": 0.9,
        "ingested": 20,
        "themed": 18,
        "dead_lettered": 2,
        "pending": 0,
        "note": doc["coverage"]["note"],
    }
    assert doc["overview"]["dead_lettered_by_stage"] == {"insight": 1, "translate": 1}
    assert doc["summary"] == "Worst: battery." and doc["summary_source"] == "llm"
    dims = {d["dimension"]: d for d in doc["sentiment_by_dimension"]}
    assert dims["battery"]["negative"] == 18 and dims["fit"]["positive"] == 18
    assert {t["name"] for t in doc["top_themes"]} == {"battery theme", "fit theme"}
    assert doc["top_themes"][0]["share"] == 0.5
    assert doc["pain_points"][0]["quotes"][0]["quote"] == "battery dies fast"
    assert doc["delights"][0]["aspect"] == "fit aspect"
    assert doc["five_w"]["who"]["observed"][0] == {"value": "runner", "count": 36, "share": 1.0}
    assert sum(r["reviews"] for r in doc["rating_vs_sentiment"]) == 20
    assert {x["language"]: x["reviews"] for x in doc["languages"]} == {"en": 10, "de": 10}
    outbox = await _exec(
        pool,
        "SELECT id, payload, attempts FROM callback_outbox WHERE job_id = %s ORDER BY id",
        (job,),
    )
    assert [r[0] for r in outbox] == [f"{job}:completed", f"{job}:report_ready"]
    assert outbox[0][1]["report_url"] == f"http://api.example/v1/jobs/{job}/report"
    # A replay (a fresh process) rebuilds nothing; the report stays as it is.
    assert not (await _handler(pool, llm).check_jobs([job])).events


async def test_llm_failure_still_ships_a_report(pool: ConnectionPool) -> None:
    job = await _seed_job(pool, n=6, themed=6, dead=0, callback=None)
    handler = _handler(pool, FakeLLM(fail=True))
    result = await handler.check_jobs([job])
    await _sink(pool, result)
    ((doc,),) = await _exec(pool, "SELECT data FROM reports WHERE job_id = %s", (job,))
    assert doc["status"] == "completed"
    assert doc["summary_source"] == "fallback"
    assert "LLMMalformedOutput" in doc["notes"][0]
    assert doc["recommended_actions"]
    assert not await _exec(pool, "SELECT 1 FROM callback_outbox WHERE job_id = %s", (job,))


async def test_unsealed_job_waits_and_tick_candidates_include_sealed(pool: ConnectionPool) -> None:
    job = await _seed_job(pool, n=4, themed=4, dead=0, callback=None)
    await _exec(pool, "UPDATE jobs SET sealed_at = NULL WHERE id = %s", (job,))
    handler = _handler(pool, FakeLLM())
    assert not (await handler.check_jobs([job])).events
    assert job not in await PgReportStore(pool).candidates(10_000)
    await _exec(pool, "UPDATE jobs SET sealed_at = now() WHERE id = %s", (job,))
    assert job in await PgReportStore(pool).candidates(10_000)
