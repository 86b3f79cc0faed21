"""Two learn replicas, a leader that dies or loses its lock, and tenants that must not
starve each other (issues 16 and 12), on the real stack.

Two `LearnHandler`s, each with its own connection pool, leader lock and LLM client (the
fake LLM server behind the real `openai` client), tick on the same held batches while the
stack's own learn service is stopped. Their results are written the way the runner writes
them (`stage_kit.RunnerSink`: rows, then events to the real broker, then cleanup), and
what reached `reviews.learned` is read back from Kafka:

- a leader that loses its lock between reading held batches and producing them does not
  get them released twice by the replica that takes over;
- a leader that dies after taking batches (never producing them) loses none: the next
  leader releases them once the dead one's claim has expired;
- leadership changing while jobs are learned never learns a job twice;
- one tenant's many jobs do not hold another tenant's job back, neither when models are
  learned nor when held batches are released.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from ingest_kit import collect, db, end_offsets, prefix, scalar, wait_for
from learn_translate_kit import make_reviews
from psycopg.types.json import Jsonb
from stage_kit import RunnerSink, pools, service_stopped, sink_for

from services.learn.service import LearnHandler, build
from services.learn.settings import LearnSettings
from shared.events import ReviewsLearned
from shared.settings import CommonSettings
from shared.topics import REVIEWS_LEARNED

# Learn at once; a claim outlives any pause of these tests unless a test shortens it.
SETTINGS: dict[str, Any] = {"timeout_s": 0.0, "claim_s": 60.0}


@pytest.fixture(scope="module")
def quiet_learn(stack: Any) -> Iterator[None]:
    """The stack's learn service drains what other tests left held, then stops meanwhile."""

    async def drained() -> bool:
        async with db() as conn:
            return not await scalar(conn, "SELECT count(*) FROM learn_pending")

    assert asyncio.run(wait_for(drained, 60.0, interval=0.5)), "learn_pending not drained"
    with service_stopped(stack, "learn"):
        yield


async def _replicas(
    quiet: None, **changes: Any
) -> AsyncIterator[list[tuple[LearnHandler, RunnerSink]]]:
    settings = LearnSettings(**(SETTINGS | changes))
    async with pools(2) as (pa, pb), sink_for(pa) as sa, sink_for(pb) as sb:
        a = await build(CommonSettings(), pa, learn_settings=settings)
        b = await build(CommonSettings(), pb, learn_settings=settings)
        try:
            yield [(a, sa), (b, sb)]
        finally:
            await a.close()
            await b.close()


@pytest.fixture
async def replicas(quiet_learn: None) -> AsyncIterator[list[tuple[LearnHandler, RunnerSink]]]:
    """Two learn handlers (learn at once, claims expire after 60 s)."""
    async for r in _replicas(quiet_learn):
        yield r


async def _job(tenant: str, *, model: bool, sealed: bool = True, reviews: int = 0) -> str:
    """A job of `tenant` (optionally with its model and `reviews` stored reviews)."""
    job = str(uuid.uuid4())
    async with db() as conn:
        await conn.execute("INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, product, target_language, status, sealed_at)"
            " VALUES (%s, %s, %s, 'en', 'sealed', CASE WHEN %s THEN now() END)",
            (job, tenant, f"Earbuds {job[:8]}", sealed),
        )
        if model:
            await conn.execute(
                "INSERT INTO job_models (job_id, dimensions, five_w, sample_size, model)"
                " VALUES (%s, %s, %s, 0, 'fixture')",
                (job, Jsonb([{"name": "Quality", "description": "q", "keywords": []}]), Jsonb({})),
            )
        for r in make_reviews(job, reviews):
            await conn.execute(
                "INSERT INTO reviews (id, job_id, origin, text, rating)"
                " VALUES (%s, %s, %s, %s, %s)",
                (r.id, job, f"it:{r.id}", r.text, r.rating),
            )
    return job


async def _hold(job: str, batches: int, per_batch: int) -> list[str]:
    """`batches` held batches of `per_batch` reviews each; the review ids."""
    reviews = make_reviews(job, batches * per_batch)
    async with db() as conn:
        for i in range(batches):
            part = reviews[i * per_batch : (i + 1) * per_batch]
            await conn.execute(
                "INSERT INTO learn_pending (job_id, batch_key, reviews) VALUES (%s, %s, %s)",
                (job, f"it:0:{i:05d}", Jsonb([r.model_dump(mode="json") for r in part])),
            )
    return [r.id for r in reviews]


async def _held(jobs: Sequence[str]) -> int:
    async with db() as conn:
        n = await scalar(
            conn, "SELECT count(*) FROM learn_pending WHERE job_id = ANY(%s)", list(jobs)
        )
        return int(n)


async def _lose_lock(handler: LearnHandler) -> None:
    """End the handler's leader connection from the server side, as a network cut would."""
    conn = handler.leadership.conn
    assert conn is not None
    async with db() as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


async def _learned(since: Any, jobs: Sequence[str], expect: int) -> Counter[str]:
    """review id -> times it reached `reviews.learned` for `jobs` since `since`."""
    wanted = set(jobs)

    def keep(r: Any) -> bool:
        return bool(r.key) and r.key.decode().split(":", 1)[0] in wanted

    def enough(kept: list[Any]) -> bool:
        return sum(len(ReviewsLearned.model_validate_json(r.value).reviews) for r in kept) > expect

    records = await collect(since, keep, enough, timeout=5.0)
    return Counter(
        rv.id for r in records for rv in ReviewsLearned.model_validate_json(r.value).reviews
    )


async def _tick_until_released(
    replicas: Sequence[tuple[LearnHandler, RunnerSink]], jobs: Sequence[str], timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await _held(jobs):
        assert loop.time() < deadline, "held batches were not released"
        for handler, sink in replicas:
            await sink(await handler.tick())
        await asyncio.sleep(0.2)


async def test_a_leader_losing_its_lock_mid_release_releases_nothing_twice(
    replicas: list[tuple[LearnHandler, RunnerSink]],
) -> None:
    (a, sink_a), (b, sink_b) = replicas
    since = await end_offsets(REVIEWS_LEARNED.full_name(prefix()))
    job = await _job("it-learn-a", model=True)
    ids = await _hold(job, batches=10, per_batch=5)

    ra = await a.tick()  # a leads and takes the held batches...
    assert ra.events
    await _lose_lock(a)  # ...then its lock goes; b leads from its next tick
    rb = await b.tick()
    await sink_a(ra)
    await sink_b(rb)
    await _tick_until_released(replicas, [job], timeout=30)

    seen = await _learned(since, [job], expect=len(ids))
    assert set(seen) == set(ids)
    assert [rid for rid, n in seen.items() if n != 1] == []


async def test_a_dead_leaders_batches_are_released_by_the_next_leader(
    quiet_learn: None,
) -> None:
    since = await end_offsets(REVIEWS_LEARNED.full_name(prefix()))
    job = await _job("it-learn-a", model=True)
    ids = await _hold(job, batches=6, per_batch=5)

    async for [(a, _), (b, sink_b)] in _replicas(quiet_learn, claim_s=1.0):
        taken = await a.tick()  # a takes the batches and dies before producing them
        assert taken.events
        await a.leadership.close()  # as in a crash, its lock goes with its connection
        await _tick_until_released([(b, sink_b)], [job], timeout=30)

    seen = await _learned(since, [job], expect=len(ids))
    assert set(seen) == set(ids)
    assert [rid for rid, n in seen.items() if n != 1] == []


async def test_leadership_changing_while_learning_learns_every_job_once(
    replicas: list[tuple[LearnHandler, RunnerSink]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.learn")
    since = await end_offsets(REVIEWS_LEARNED.full_name(prefix()))
    jobs = [await _job("it-learn-a", model=False, reviews=20) for _ in range(6)]
    ids = [rid for job in jobs for rid in await _hold(job, batches=2, per_batch=10)]

    for round_no in range(40):
        results = await asyncio.gather(*(h.tick() for h, _ in replicas))
        for (_, sink), result in zip(replicas, results, strict=True):
            await sink(result)
        if round_no in (1, 4, 9):
            for handler, _ in replicas:
                if handler.leadership.conn is not None and handler.leadership.leader:
                    await _lose_lock(handler)
        if not await _held(jobs):
            break
        await asyncio.sleep(0.2)
    assert not await _held(jobs), "jobs were not learned and released"

    stored = Counter(
        r.job_id  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "job model stored" and getattr(r, "job_id", None) in jobs
    )
    assert stored == dict.fromkeys(jobs, 1)
    seen = await _learned(since, jobs, expect=len(ids))
    assert set(seen) == set(ids)
    assert [rid for rid, n in seen.items() if n != 1] == []


async def _all_learned(handler: LearnHandler, sink: RunnerSink, jobs: Sequence[str]) -> bool:
    """One more tick (sunk); whether every one of `jobs` has its model now."""
    await sink(await handler.tick())
    async with db() as conn:
        n = await scalar(conn, "SELECT count(*) FROM job_models WHERE job_id = ANY(%s)", jobs)
    return int(n) == len(jobs)


async def test_one_tenants_many_jobs_do_not_hold_back_another_tenants_job_in_learning(
    quiet_learn: None,
) -> None:
    many = [await _job("it-fair-a", model=False, reviews=5) for _ in range(12)]
    for job in many:
        await _hold(job, batches=1, per_batch=5)
    single = await _job("it-fair-b", model=False, reviews=5)
    await _hold(single, batches=1, per_batch=5)
    everyone = [*many, single]

    async for [(handler, sink), _] in _replicas(quiet_learn, concurrency=2):
        await sink(await handler.tick())  # the first tick starts learning
        assert await wait_for(functools.partial(_all_learned, handler, sink, everyone), 60.0)
    async with db() as conn:
        cur = await conn.execute(
            "SELECT job_id FROM job_models WHERE job_id = ANY(%s) ORDER BY created_at, job_id",
            (everyone,),
        )
        order = [r[0] for r in await cur.fetchall()]
    # Round robin: tenant B's job is among the first two learned (concurrency 2).
    assert order.index(single) < 2, order.index(single)


async def test_one_tenants_big_release_does_not_hold_back_another_tenants_batches(
    quiet_learn: None,
) -> None:
    big = await _job("it-fair-a", model=True)
    await _hold(big, batches=300, per_batch=1)
    small = await _job("it-fair-b", model=True)
    await _hold(small, batches=1, per_batch=1)
    try:
        async for [(handler, _), _] in _replicas(quiet_learn, release_rows_per_tick=50):
            first = await handler.tick()
        keys = [e.key.decode() for e in first.events if e.key]
        assert any(k.startswith(small) for k in keys), "tenant B waited behind tenant A"
        assert len(keys) <= 50
    finally:
        async with db() as conn:
            await conn.execute("DELETE FROM learn_pending WHERE job_id = ANY(%s)", ([big, small],))
