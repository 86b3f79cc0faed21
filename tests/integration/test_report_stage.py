"""The report stage's SQL and rows against the real Postgres (no Kafka, fake LLM port).

A random job's stage rows are written directly (`report_kit.seed_job`), then
`ReportHandler.check_jobs` decides, aggregates and writes the job's transition with its
report, callback outbox rows and `job_events` rows, which are checked as stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel
from report_kit import execute, seed_job, theme_rest
from stage_kit import service_stopped

from services.report.service import ReportHandler
from services.report.settings import ReportSettings
from services.report.store import PgReportStore
from shared.db.pool import ConnectionPool
from shared.llm.errors import LLMMalformedOutput
from shared.llm.prompts import PromptTemplate
from shared.settings import DatabaseSettings

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
    with service_stopped(stack, "report"):
        yield


@pytest.fixture
async def pool(no_report_service: None) -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(DatabaseSettings().libpq_url(), size=2)
    await p.open()
    yield p
    await p.close()


async def _events(pool: ConnectionPool, job: str) -> list[str]:
    """The ids of the job's `job_events` rows (one per announced step)."""
    rows = await execute(pool, "SELECT id FROM job_events WHERE job_id = %s ORDER BY seq", (job,))
    return [r[0] for r in rows]


def _handler(pool: ConnectionPool, llm: FakeLLM, stall_timeout_s: float = 900.0) -> ReportHandler:
    return ReportHandler(
        PgReportStore(pool),
        llm,
        ReportSettings(public_api_url="http://api.example", stall_timeout_s=stall_timeout_s),
        "voc.",
    )


async def test_report_ready_then_completed_with_status_report_and_outbox(
    pool: ConnectionPool,
) -> None:
    job = await seed_job(pool, n=20, themed=18, dead=0, callback="https://hooks.example.com/h")
    llm = FakeLLM()
    handler = _handler(pool, llm)

    await handler.check_jobs([job])
    assert await _events(pool, job) == [f"{job}:report_ready"]
    status, report_status, coverage, doc = (
        await execute(
            pool,
            "SELECT j.status, r.status, r.coverage, r.data FROM jobs j "
            "JOIN reports r ON r.job_id = j.id WHERE j.id = %s",
            (job,),
        )
    )[0]
    assert (status, report_status, coverage) == ("report_ready", "report_ready", 0.9)
    assert doc["partial"] is True and doc["notice"].startswith("Partial report: 18 of 20")
    # Same counts again: nothing to do (no second build, no second event).
    await _handler(pool, llm).check_jobs([job])
    assert len(llm.calls) == 1 and len(await _events(pool, job)) == 1

    # The last two reviews: one dead-lettered, one still missing -> not complete yet.
    rows = await execute(
        pool,
        "SELECT r.id FROM reviews r WHERE r.job_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM review_themed t WHERE t.review_id = r.id) ORDER BY r.id",
        (job,),
    )
    await execute(
        pool,
        'INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "offset", '
        "error_type, error) VALUES (%s, 'translate', %s, %s, 't', 0, 0, 'X', 'x')",
        (f"translate:{rows[0][0]}", job, rows[0][0]),
    )
    await handler.check_jobs([job])
    assert len(await _events(pool, job)) == 1
    await execute(
        pool,
        'INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "offset", '
        "error_type, error) VALUES (%s, 'insight', %s, %s, 't', 0, 0, 'X', 'x')",
        (f"insight:{rows[1][0]}", job, rows[1][0]),
    )
    await handler.check_jobs([job])
    assert await _events(pool, job) == [f"{job}:report_ready", f"{job}:completed"]
    ((status, doc),) = await execute(
        pool,
        "SELECT j.status, r.data FROM jobs j JOIN reports r ON r.job_id = j.id WHERE j.id = %s",
        (job,),
    )
    assert status == "completed"
    assert doc["status"] == "completed" and doc["final"] is True
    assert doc["partial"] is False and doc["notice"] is None
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
    outbox = await execute(
        pool,
        "SELECT id, payload, attempts FROM callback_outbox WHERE job_id = %s ORDER BY id",
        (job,),
    )
    assert [r[0] for r in outbox] == [f"{job}:completed", f"{job}:report_ready"]
    assert outbox[0][1]["report_url"] == f"http://api.example/v1/jobs/{job}/report"
    # A replay (a fresh process) rebuilds nothing; the report stays as it is.
    calls = len(llm.calls)
    await _handler(pool, llm).check_jobs([job])
    assert len(llm.calls) == calls and len(await _events(pool, job)) == 2


async def test_llm_failure_still_ships_a_report(pool: ConnectionPool) -> None:
    job = await seed_job(pool, n=6, themed=6, dead=0, callback=None)
    handler = _handler(pool, FakeLLM(fail=True))
    await handler.check_jobs([job])
    ((doc,),) = await execute(pool, "SELECT data FROM reports WHERE job_id = %s", (job,))
    assert doc["status"] == "completed"
    assert doc["summary_source"] == "fallback"
    assert "LLMMalformedOutput" in doc["notes"][0]
    assert doc["recommended_actions"]
    assert not await execute(pool, "SELECT 1 FROM callback_outbox WHERE job_id = %s", (job,))


async def test_unsealed_job_waits_and_tick_candidates_include_sealed(pool: ConnectionPool) -> None:
    job = await seed_job(pool, n=4, themed=4, dead=0, callback=None)
    await execute(pool, "UPDATE jobs SET sealed_at = NULL WHERE id = %s", (job,))
    handler = _handler(pool, FakeLLM())
    await handler.check_jobs([job])
    assert not await _events(pool, job)
    assert job not in await PgReportStore(pool).candidates(10_000)
    await execute(pool, "UPDATE jobs SET sealed_at = now() WHERE id = %s", (job,))
    assert job in await PgReportStore(pool).candidates(10_000)


async def test_a_stalled_job_gets_a_partial_report_and_clears_when_reviews_finish(
    pool: ConnectionPool,
) -> None:
    job = await seed_job(pool, n=10, themed=3, dead=0, callback="https://hooks.example.com/h")
    handler = _handler(pool, FakeLLM(), stall_timeout_s=0.5)
    await execute(
        pool, "UPDATE jobs SET sealed_at = now() - interval '1 minute' WHERE id = %s", (job,)
    )
    await execute(
        pool,
        "UPDATE review_themed SET created_at = now() - interval '1 minute' WHERE job_id = %s",
        (job,),
    )
    await handler.check_jobs([job])
    ((status, since, reason, report_status, doc),) = await execute(
        pool,
        "SELECT j.status, j.stalled_since, j.stall_reason, r.status, r.data FROM jobs j "
        "JOIN reports r ON r.job_id = j.id WHERE j.id = %s",
        (job,),
    )
    assert (status, report_status) == ("stalled", "partial")
    assert since is not None and "7 of 10 reviews are still in progress" in reason
    assert doc["partial"] is True and "The job stalled" in doc["notice"]
    # A stall announces nothing (no jobs.completed event, no callback).
    assert not await _events(pool, job)
    assert not await execute(pool, "SELECT 1 FROM callback_outbox WHERE job_id = %s", (job,))
    await handler.check_jobs([job])  # still stalled: nothing more
    assert (await execute(pool, "SELECT status FROM jobs WHERE id = %s", (job,)))[0][0] == "stalled"

    await theme_rest(pool, job)
    await handler.check_jobs([job])
    ((status, since, reason, report_status),) = await execute(
        pool,
        "SELECT j.status, j.stalled_since, j.stall_reason, r.status FROM jobs j "
        "JOIN reports r ON r.job_id = j.id WHERE j.id = %s",
        (job,),
    )
    assert (status, since, reason, report_status) == ("completed", None, None, "completed")
    assert await _events(pool, job) == [f"{job}:report_ready", f"{job}:completed"]
