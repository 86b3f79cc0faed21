"""`voc replay job J --from STAGE`: reprocess one job from one stage on, and nothing else.

The job's records are rebuilt from Postgres (what the stage before STAGE stored) and
produced to STAGE's input topic with a `voc-replay` header (and `voc-no-cache` with
`--no-cache`, which every later stage passes on and which makes their LLM calls skip the
result cache). Other jobs are not touched: only this job's records are re-emitted.

Knowing when the replay is through needs no bookkeeping in the stages: every stage commits
an input offset only after producing what it derived from it, so once a stage's group has
committed past the end offsets its input had when the previous stage was through, all of
the replay's records have left that stage. The command walks that barrier stage by stage
to `report`, with a progress line per stage, then marks the job `replayed`; the report
stage rebuilds the report from the replayed rows and sets the job `completed` again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from shared import events as ev
from shared.jobstatus import forget_status
from shared.topics import STAGE_INPUT, stage_group

PIPELINE = ("learn", "translate", "insight", "theme", "report")
BATCH = 50

Q_REVIEWS = """
SELECT id, text, rating, language, created_at_src, external_id
FROM reviews WHERE job_id = %s ORDER BY id
"""
Q_TRANSLATED = """
SELECT t.review_id, t.text, t.source_language, t.translated, r.rating, r.text, r.external_id
FROM translations t JOIN reviews r ON r.id = t.review_id
WHERE t.job_id = %s ORDER BY t.review_id
"""
Q_INSIGHTS = """
SELECT s.review_id, i.id, i.dimension, i.aspect, i.sentiment, i.score, i.quote,
       i.quote_start, i.quote_end, i.five_w, i.quote_translation, i.external_review_id
FROM review_insights s LEFT JOIN insights i ON i.review_id = s.review_id
WHERE s.job_id = %s ORDER BY s.review_id, i.id
"""
Q_THEMED = """
SELECT t.review_id, m.insight_id, m.theme_id
FROM review_themed t LEFT JOIN theme_members m ON m.review_id = t.review_id
WHERE t.job_id = %s ORDER BY t.review_id, m.insight_id
"""


class ReplayError(ValueError):
    """The job cannot be replayed as asked."""


@dataclass(frozen=True)
class JobInfo:
    """What the replay needs to know about the job."""

    id: str
    tenant_id: str
    target_language: str
    status: str


async def job_info(conn: psycopg.AsyncConnection[Any], job_id: str) -> JobInfo:
    """The job row, or `ReplayError` if there is none."""
    cur = await conn.execute(
        "SELECT id, tenant_id, target_language, status FROM jobs WHERE id = %s", (job_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise ReplayError(f"no job {job_id!r}")
    return JobInfo(*row)


async def _grouped(
    conn: psycopg.AsyncConnection[Any], sql: str, job_id: str
) -> AsyncIterator[tuple[str, list[tuple[Any, ...]]]]:
    """Rows of `sql` grouped by their first column (the review id), in order."""
    cur = conn.cursor()
    await cur.execute(sql, (job_id,))
    current: str | None = None
    rows: list[tuple[Any, ...]] = []
    async for row in cur:
        if current is not None and row[0] != current:
            yield current, rows
            rows = []
        current = row[0]
        rows.append(row)
    if current is not None:
        yield current, rows


async def events_for(
    conn: psycopg.AsyncConnection[Any], job: JobInfo, stage: str
) -> AsyncIterator[ev.Event]:
    """The events that feed `stage` for this job, rebuilt from the previous stage's rows."""
    batch: list[Any] = []
    builders: dict[str, Callable[[list[Any]], ev.Event]] = {
        "learn": lambda b: ev.ReviewsIngested(job_id=job.id, reviews=b),
        "translate": lambda b: ev.ReviewsLearned(
            job_id=job.id, target_language=job.target_language, reviews=b
        ),
        "insight": lambda b: ev.ReviewsTranslated(
            job_id=job.id, target_language=job.target_language, reviews=b
        ),
    }
    if stage in ("learn", "translate"):
        cur = conn.cursor()
        await cur.execute(Q_REVIEWS, (job.id,))
        async for rid, text, rating, lang, created, external in cur:
            batch.append(
                ev.Review(
                    id=rid,
                    text=text,
                    rating=rating,
                    language=lang,
                    created_at=created,
                    external_id=external,
                )
            )
            if len(batch) == BATCH:
                yield builders[stage](batch)
                batch = []
    elif stage == "insight":
        cur = conn.cursor()
        await cur.execute(Q_TRANSLATED, (job.id,))
        async for rid, text, src, translated, rating, original, external in cur:
            # Quotes are taken from the review as written: a replay carries it as the
            # translate stage did, or the insight stage would quote the translation.
            batch.append(
                ev.TranslatedReview(
                    id=rid,
                    text=text,
                    source_language=src,
                    translated=translated,
                    rating=rating,
                    original_text=original if translated else None,
                    external_id=external,
                )
            )
            if len(batch) == BATCH:
                yield builders[stage](batch)
                batch = []
    elif stage == "theme":
        ids: list[str] = []
        async for rid, rows in _grouped(conn, Q_INSIGHTS, job.id):
            ids.append(rid)
            for _, iid, dim, aspect, sent, score, quote, qs, qe, five_w, tr, ext in rows:
                if iid is not None:
                    batch.append(
                        ev.Insight(
                            id=iid,
                            review_id=rid,
                            dimension=dim,
                            aspect=aspect,
                            sentiment=sent,
                            score=score,
                            quote=quote,
                            quote_start=qs,
                            quote_end=qe,
                            five_w=five_w,
                            quote_translation=tr,
                            external_review_id=ext,
                        )
                    )
            if len(ids) == BATCH:
                yield ev.InsightsExtracted(job_id=job.id, review_ids=ids, insights=batch)
                ids, batch = [], []
        if ids:
            yield ev.InsightsExtracted(job_id=job.id, review_ids=ids, insights=batch)
        return
    elif stage == "report":
        ids = []
        async for rid, rows in _grouped(conn, Q_THEMED, job.id):
            ids.append(rid)
            batch += [ev.ThemeAssignment(insight_id=i, theme_id=t) for _, i, t in rows if i]
            if len(ids) == BATCH:
                yield ev.ThemesExtracted(job_id=job.id, review_ids=ids, assignments=batch)
                ids, batch = [], []
        if ids:
            yield ev.ThemesExtracted(job_id=job.id, review_ids=ids, assignments=batch)
        return
    else:
        raise ReplayError(f"cannot replay from {stage!r}; one of {', '.join(PIPELINE)}")
    if batch:
        yield builders[stage](batch)


def review_count(event: ev.Event) -> int:
    """How many reviews a re-emitted record carries."""
    return len(getattr(event, "reviews", None) or getattr(event, "review_ids", None) or [])


def headers(replay_id: str, no_cache: bool) -> list[tuple[str, bytes]]:
    """The marks a replayed record carries."""
    marks = [("voc-replay", replay_id.encode())]
    if no_cache:
        marks.append(("voc-no-cache", b"1"))
    return marks


def new_replay_id() -> str:
    """A fresh id for one replay (in the header and the logs)."""
    return uuid.uuid4().hex[:12]


async def set_status(
    conn: psycopg.AsyncConnection[Any], redis_url: str, job: JobInfo, status: str
) -> None:
    """Change the job's status and drop the API's cached copy of it."""
    from shared.redis import redis_client

    await conn.execute(
        "UPDATE jobs SET status = %s, updated_at = now() WHERE id = %s", (status, job.id)
    )
    await conn.commit()
    redis = redis_client(redis_url, max_connections=2)
    try:
        await forget_status(redis, job.tenant_id, job.id)
    finally:
        await redis.aclose()


async def barrier(
    bootstrap: str,
    prefix: str,
    stage: str,
    report: Callable[[str, int, int], None],
    timeout_s: float,
) -> None:
    """Wait until `stage`'s group has committed past its input topic's current end."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    topic = STAGE_INPUT[stage].full_name(prefix)
    group = stage_group(stage, prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics([topic])
        parts = [p["partition"] for d in described for p in d["partitions"]]
        tps = [TopicPartition(topic, p) for p in parts]
        target = await consumer.end_offsets(tps)
        total = None
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            # A partition the group never committed on reports -1 (or nothing): count it
            # from 0, so an empty one is not taken for a record of lag.
            done = {tp: max(0, committed[tp].offset) if tp in committed else 0 for tp in tps}
            left = sum(max(0, target[tp] - done[tp]) for tp in tps)
            total = left if total is None else max(total, left)
            report(stage, total - left, total)
            if left == 0:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise ReplayError(f"{stage} did not get through the replay in {timeout_s:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()
