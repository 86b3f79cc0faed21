"""Two report replicas on the same jobs (issue 16, point 1), on the real stack.

Two `ReportHandler`s, each with its own connection pool, leader lock and LLM client (the
fake LLM server behind the real `openai` client), race on the same jobs while the stack's
own report service is stopped; their results are written the way the runner writes them
(`stage_kit.RunnerSink`: rows, then events to the real broker, then cleanup). Whatever
the interleaving, each report is built once per state, a job's status never steps back
(`completed` to `report_ready`), an operator's `cancelled` is never overwritten, and each
`jobs.completed` event reaches Kafka once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson
import pytest
from ingest_kit import collect, end_offsets, prefix
from report_kit import execute, job_state, seed_job, theme_rest
from stage_kit import FakeLLM, RunnerSink, pools, service_stopped, sink_for

from services.report.service import ReportHandler, build
from services.report.settings import ReportSettings
from shared.events import ThemesExtracted
from shared.settings import CommonSettings
from shared.stage import Incoming
from shared.topics import JOBS_COMPLETED, THEMES_EXTRACTED

RANK = {"sealed": 0, "stalled": 0, "report_ready": 1, "completed": 2}


@pytest.fixture(scope="module")
def no_report_service(stack: Any) -> Iterator[None]:
    """Stop the stack's report service meanwhile: its tick would build these jobs too."""
    with service_stopped(stack, "report"):
        yield


@pytest.fixture
async def replicas(
    no_report_service: None,
) -> AsyncIterator[list[tuple[ReportHandler, RunnerSink]]]:
    """Two report handlers with their own pools and sinks."""
    settings = ReportSettings(public_api_url="http://api.example")
    async with pools(2) as (pa, pb), sink_for(pa) as sa, sink_for(pb) as sb:
        a = await build(CommonSettings(), pa, report=settings)
        b = await build(CommonSettings(), pb, report=settings)
        try:
            yield [(a, sa), (b, sb)]
        finally:
            await a.close()
            await b.close()


def _themes_events(jobs: Sequence[str]) -> list[Incoming]:
    """A `themes.extracted` record per job, as the runner hands them to `handle`."""
    topic = THEMES_EXTRACTED.full_name(prefix())
    out = []
    for i, job in enumerate(jobs):
        event = ThemesExtracted(job_id=job, review_ids=[], assignments=[])
        out.append(Incoming(event, topic, 0, i, event.to_bytes(), job.encode()))
    return out


async def _handle(handler: ReportHandler, sink: RunnerSink, jobs: Sequence[str]) -> None:
    """`handle` a batch naming `jobs`, and sink its result as the runner would."""
    await sink(await handler.handle(_themes_events(jobs)))


def _builds(caplog: pytest.LogCaptureFixture, jobs: Sequence[str]) -> Counter[tuple[str, str]]:
    """(job, status) -> reports built, from the stage's "report built" log lines."""
    return Counter(
        (r.job_id, r.status)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "report built" and getattr(r, "job_id", None) in jobs
    )


async def _events(since: Any, jobs: Sequence[str]) -> Counter[tuple[str, str]]:
    """(job, status) -> `jobs.completed` records since `since` (read for a few seconds)."""
    wanted = {j.encode() for j in jobs}
    records = await collect(since, lambda r: r.key in wanted, lambda _: False, timeout=4.0)
    out: Counter[tuple[str, str]] = Counter()
    for r in records:
        doc = orjson.loads(r.value)
        out[(doc["job_id"], doc["status"])] += 1
    return out


async def _ticks(replicas: Sequence[tuple[ReportHandler, RunnerSink]], rounds: int = 3) -> None:
    """Both replicas tick at the same time, `rounds` times, sinking what they return."""
    for _ in range(rounds):
        results = await asyncio.gather(*(h.tick() for h, _ in replicas))
        for (_, sink), result in zip(replicas, results, strict=True):
            await sink(result)


async def test_racing_replicas_build_each_report_once_and_emit_each_event_once(
    replicas: list[tuple[ReportHandler, RunnerSink]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.report")
    (a, sink_a), (b, sink_b) = replicas
    pool = sink_a.pool
    topic = JOBS_COMPLETED.full_name(prefix())
    # Whatever else is due on the stack is built first, so the ticks below race on ours.
    await _ticks(replicas, rounds=1)
    since = await end_offsets(topic)
    whole = [await seed_job(pool, n=10, themed=10, dead=0, callback=None) for _ in range(2)]
    most = [await seed_job(pool, n=20, themed=18, dead=0, callback=None) for _ in range(2)]
    jobs = whole + most

    for _ in range(2):
        await asyncio.gather(_handle(a, sink_a, jobs), _handle(b, sink_b, jobs))
    await _ticks(replicas)
    for job in most:
        assert await theme_rest(pool, job) == 2
    for _ in range(2):
        await asyncio.gather(_handle(a, sink_a, jobs), _handle(b, sink_b, jobs))
    await _ticks(replicas)

    for job in jobs:
        status, report_status, _ = await job_state(pool, job)
        assert (status, report_status) == ("completed", "completed")
    expected = {(j, "completed"): 1 for j in jobs} | {(j, "report_ready"): 1 for j in most}
    assert dict(_builds(caplog, jobs)) == expected
    assert dict(await _events(since, jobs)) == {(j, s): 1 for j in jobs for s in RANK if RANK[s]}


async def test_a_slow_replica_never_steps_a_job_back(
    replicas: list[tuple[ReportHandler, RunnerSink]], caplog: pytest.LogCaptureFixture
) -> None:
    """B builds `report_ready` slowly; meanwhile the job reaches 100% and A looks at it."""
    caplog.set_level(logging.INFO, logger="services.report")
    (a, sink_a), (b, sink_b) = replicas
    pool = sink_a.pool
    topic = JOBS_COMPLETED.full_name(prefix())
    await _ticks(replicas, rounds=1)
    since = await end_offsets(topic)
    job = await seed_job(pool, n=20, themed=18, dead=0, callback=None)
    fake = FakeLLM()
    statuses: list[str] = []

    async def observe() -> None:
        statuses.append((await job_state(pool, job))[0])

    async with fake.configured(latency_ms="2500"):
        before = await fake.requests("report")
        slow = asyncio.create_task(_handle(b, sink_b, [job]))
        await fake.wait_request("report", before)  # B is inside its LLM call
        await theme_rest(pool, job)
        await _handle(a, sink_a, [job])
        await observe()
        await slow
        await observe()
        for _ in range(3):
            await _ticks(replicas, rounds=1)
            await observe()

    ranks = [RANK[s] for s in statuses]
    assert ranks == sorted(ranks), statuses
    assert statuses[-1] == "completed"
    assert (await job_state(pool, job))[1] == "completed"
    builds = _builds(caplog, [job])
    assert all(n == 1 for n in builds.values()) and ((job, "completed") in builds), builds
    assert dict(await _events(since, [job])) == {(job, "report_ready"): 1, (job, "completed"): 1}


async def test_an_operators_cancel_is_never_overwritten(
    replicas: list[tuple[ReportHandler, RunnerSink]],
) -> None:
    """The job is cancelled while a replica is building its report."""
    (_, sink_a), (b, sink_b) = replicas
    pool = sink_a.pool
    topic = JOBS_COMPLETED.full_name(prefix())
    await _ticks(replicas, rounds=1)
    since = await end_offsets(topic)
    job = await seed_job(pool, n=6, themed=6, dead=0, callback="https://hooks.example.com/h")
    fake = FakeLLM()
    async with fake.configured(latency_ms="2500"):
        before = await fake.requests("report")
        slow = asyncio.create_task(_handle(b, sink_b, [job]))
        await fake.wait_request("report", before)
        await execute(pool, "UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job,))
        await slow
        await _ticks(replicas)
    assert (await job_state(pool, job))[0] == "cancelled"
    assert not await execute(pool, "SELECT id FROM callback_outbox WHERE job_id = %s", (job,))
    assert not await _events(since, [job])
