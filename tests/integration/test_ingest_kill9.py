"""kill -9 the ingest service in the middle of a 20,000-review job: nothing lost, nothing doubled.

The job is produced as 40 chunks of 500, at most a few chunks ahead of what ingest has
stored, so the kill points are deterministic: when a given share of the rows is in Postgres
the ingest process is SIGKILLed (between batches or inside one: reading, upserting,
producing or committing), restarted, and the test waits for the job to complete. Meanwhile
the producer either keeps going (a backlog builds up while ingest is down) or pauses.
Afterwards Postgres must hold exactly the job's 20,000 reviews, the chunk counts must be
what a crash-free run gives (a replayed chunk recognises its own rows), and every review id
must be on `reviews.ingested`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from ingest_kit import (
    collect,
    db,
    end_offsets,
    ingested_topic,
    new_job,
    producer,
    scalar,
    send_chunk,
    submitted,
    wait_for,
)

from shared.events import ReviewsIngested, ReviewsSubmitted
from shared.reviews import dedup_key, normalise_row, review_uuid
from voc.stack import Stack

pytestmark = pytest.mark.integration

N = 20_000
CHUNK = 500
AHEAD = 4  # chunks the producer may run ahead of what ingest has stored
TIMEOUT = 120.0
WORDS = (
    *("battery", "screen", "fast", "slow", "broken", "great"),
    *("price", "delivery", "quality", "size", "fits"),
)


def _rows() -> list[dict[str, Any]]:
    return [
        {
            "text": f"{WORDS[i % 11]} {WORDS[(i * 7) % 11]} review number {i}",
            "rating": 1 + i % 5,
            # Half carry an external id (dedup by id), half do not (dedup by text).
            **({"review_id": f"ext-{i}"} if i % 2 else {}),
        }
        for i in range(N)
    ]


class PacedProducer:
    """Produces chunks in order, never more than `AHEAD` chunks ahead of the stored rows
    (unless `free`), and not at all while `running` is clear."""

    def __init__(self, chunks: Sequence[ReviewsSubmitted], stored: Callable[[], Awaitable[int]]):
        self.chunks = chunks
        self.stored = stored
        self.running = asyncio.Event()
        self.running.set()
        self.free = False

    async def run(self) -> None:
        async with producer() as p:
            for n, chunk in enumerate(self.chunks):
                while not self.free and await self.stored() < (n - AHEAD) * CHUNK:
                    await asyncio.sleep(0.01)
                await self.running.wait()
                await send_chunk(p, chunk)


class IdTally:
    """The review ids of the `ReviewsIngested` records seen so far (decoded once each)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.decoded = 0
        self.emitted = 0  # with replays, more than len(ids)

    def update(self, records: list[ConsumerRecord[bytes, bytes]]) -> set[str]:
        for rec in records[self.decoded :]:
            reviews = ReviewsIngested.model_validate_json(rec.value).reviews
            self.ids.update(r.id for r in reviews)
            self.emitted += len(reviews)
        self.decoded = len(records)
        return self.ids


async def _consuming() -> None:
    """Wait until ingest really consumes (a restarted one may still be joining its group)."""
    probe = submitted(new_job(), "probe", 0, [{"text": "probe"}])
    async with producer() as p, db() as conn:
        await send_chunk(p, probe)

        async def stored() -> bool:
            n = await scalar(conn, "SELECT count(*) FROM reviews WHERE job_id=%s", probe.job_id)
            return bool(n == 1)

        assert await wait_for(stored, TIMEOUT), "ingest does not consume"


@pytest.fixture
async def ingest(stack: dict[str, str], stack_ctl: Stack) -> Any:
    """The stack's ingest service, consuming before and running after the test."""
    if stack_ctl.service_pid("ingest") is None:
        await asyncio.to_thread(stack_ctl.start_service, "ingest")
    await _consuming()
    yield stack_ctl
    if stack_ctl.service_pid("ingest") is None:
        await asyncio.to_thread(stack_ctl.start_service, "ingest")


@pytest.mark.parametrize(
    ("kill_at", "pause_while_down"),
    [((0.1,), False), ((0.5,), False), ((0.85,), False), ((0.3, 0.7), True)],
    ids=["early", "mid", "late", "twice"],
)
async def test_kill9_mid_job_loses_nothing_and_doubles_nothing(
    ingest: Stack, kill_at: tuple[float, ...], pause_while_down: bool
) -> None:
    job, upload = new_job(), str(uuid.uuid4())
    rows = _rows()
    chunks = [
        submitted(job, upload, n, rows[n * CHUNK : (n + 1) * CHUNK], first_row=n * CHUNK + 1)
        for n in range(N // CHUNK)
    ]
    expected = {review_uuid(job, dedup_key(normalise_row(r))) for r in rows}
    assert len(expected) == N
    since = await end_offsets(ingested_topic())
    async with db() as conn, db() as producer_conn:

        async def count(c: Any = conn) -> int:
            return int(await scalar(c, "SELECT count(*) FROM reviews WHERE job_id=%s", job))

        paced = PacedProducer(chunks, lambda: count(producer_conn))
        producing = asyncio.create_task(paced.run())
        try:
            for share in kill_at:

                async def reached(target: int = int(share * N)) -> bool:
                    return await count() >= target

                assert await wait_for(reached, TIMEOUT, interval=0.005), "ingest made no progress"
                await asyncio.to_thread(ingest.kill_service, "ingest")
                if pause_while_down:
                    paced.running.clear()
                else:
                    paced.free = True  # a backlog builds up while ingest is down
                at_kill = await count()
                assert 0 < at_kill < N, f"kill at {share:.0%} was not mid-job ({at_kill} rows)"
                await asyncio.to_thread(ingest.start_service, "ingest")
                paced.running.set()
            await producing
        finally:
            paced.running.set()
            if not producing.done():
                producing.cancel()

        async def complete() -> bool:
            n = await scalar(conn, "SELECT count(*) FROM ingest_chunks WHERE job_id=%s", job)
            return n == N // CHUNK and await count() == N

        assert await wait_for(complete, TIMEOUT, interval=0.2), f"{await count()} of {N} stored"
        cur = await conn.execute("SELECT id FROM reviews WHERE job_id=%s", (job,))
        ids = [r[0] for r in await cur.fetchall()]
        assert len(ids) == N and set(ids) == expected
        cur = await conn.execute(
            "SELECT count(*), sum(rows), sum(accepted), sum(duplicates), sum(rejected)"
            " FROM ingest_chunks WHERE job_id=%s",
            (job,),
        )
        assert await cur.fetchone() == (N // CHUNK, N, N, 0, 0)
        # Every review's origin is its own row: no replayed chunk lost a review to another.
        wrong = await scalar(
            conn,
            "SELECT count(*) FROM reviews WHERE job_id=%s AND split_part(origin, ':', 3)::int"
            " NOT BETWEEN split_part(origin, ':', 2)::int * %s + 1"
            " AND (split_part(origin, ':', 2)::int + 1) * %s",
            job,
            CHUNK,
            CHUNK,
        )
        assert wrong == 0

    prefix = f"{job}:".encode()
    tally = IdTally()
    await collect(
        since,
        lambda rec: rec.key is not None and rec.key.startswith(prefix),
        lambda got: tally.update(got) >= expected,
        TIMEOUT,
    )
    assert tally.ids == expected, f"{len(expected - tally.ids)} review ids never emitted"
    # Not asserted (it depends on where the kill lands): how many reviews a replay re-emitted.
    print(f"kill at {kill_at}: {tally.emitted - N} reviews emitted again after the restart")
