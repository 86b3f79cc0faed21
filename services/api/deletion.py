"""Deleting jobs: `DELETE /v1/jobs/{id}`, and the retention sweep that expires old jobs.

A deletion first turns the job's row into a tombstone (status `deleted`; product,
callback URL and options blanked), so every stage skips the job's records from then on
(`shared.stage.deleted`), then deletes the job's rows from every table that has a `job_id`
column (found from the models, so a new table is covered without a change here) and its
cached status document in Redis. The tombstone itself is kept until the Kafka topics'
retention has removed the job's records, so no stage can meet a record of a job that has
disappeared.

`sweep` runs every `VOC_API_SWEEP_INTERVAL_S` in the API process (one replica at a time,
under a Postgres advisory lock):
1. jobs created more than `VOC_JOB_RETENTION_DAYS` ago are deleted as above;
2. tombstones within the topics' retention are purged again: rows a stage wrote for a
   record it was processing while the job was deleted go too;
3. tombstones older than the topics' retention (plus a day) are removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.models import Base
from shared.jobstatus import DELETED

from . import metrics
from .cache import StatusCache
from .settings import ApiSettings

log = logging.getLogger(__name__)

SWEEP_LOCK = "voc:api:retention-sweep"
EXPIRE_PER_SWEEP = 200  # jobs expired per sweep: a backlog is worked off over a few sweeps
IDS_PER_STATEMENT = 500
TOMBSTONE_MARGIN = timedelta(days=1)  # past the topics' retention, for late replays

_TOMBSTONE = text(
    f"UPDATE jobs SET status = '{DELETED}', product = '', callback_url = NULL, "
    "options = '{}'::jsonb, updated_at = now() "
    f"WHERE id = :id AND tenant_id = :tenant_id AND status <> '{DELETED}' RETURNING id"
)
# The jobs to expire are a MATERIALIZED CTE, evaluated once: as an IN subquery the planner
# may rescan it and expire more than `limit` jobs per sweep (test_claim_limits.py).
_EXPIRE = text(
    "WITH c AS MATERIALIZED (SELECT id FROM jobs "
    f"  WHERE status <> '{DELETED}' AND created_at < now() - make_interval(secs => :age_s) "
    "  ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
    f"UPDATE jobs SET status = '{DELETED}', product = '', callback_url = NULL, "
    "options = '{}'::jsonb, updated_at = now() "
    "FROM c WHERE jobs.id = c.id "
    "RETURNING jobs.id, jobs.tenant_id"
)
_RECENT_TOMBSTONES = text(
    f"SELECT id FROM jobs WHERE status = '{DELETED}' "
    "AND updated_at >= now() - make_interval(secs => :age_s)"
)
_OLD_TOMBSTONES = text(
    f"SELECT id FROM jobs WHERE status = '{DELETED}' "
    "AND updated_at < now() - make_interval(secs => :age_s) LIMIT :limit"
)
_DROP_TOMBSTONES = text(f"DELETE FROM jobs WHERE id = ANY(:ids) AND status = '{DELETED}'")
_TRY_LOCK = text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))")
_UNLOCK = text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")


def job_tables() -> list[Table]:
    """Every table holding rows of a job (it has a `job_id` column), children first."""
    return [
        t for t in reversed(Base.metadata.sorted_tables) if "job_id" in t.c and t.name != "jobs"
    ]


async def purge_rows(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, int]:
    """Delete the rows of these jobs from every job table; rows deleted per table."""
    counts: dict[str, int] = {}
    for table in job_tables():
        deleted = 0
        for start in range(0, len(job_ids), IDS_PER_STATEMENT):
            part = list(job_ids[start : start + IDS_PER_STATEMENT])
            result = await conn.execute(table.delete().where(table.c.job_id.in_(part)))
            deleted += max(0, result.rowcount or 0)
        counts[str(table.name)] = deleted
    return counts


def _until(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def retained(topic_retention_days: float) -> list[dict[str, str]]:
    """What a deletion cannot remove at once, where it stays and until when."""
    return [
        {
            "what": "the job's records on the pipeline's Kafka topics (reviews.submitted to "
            "themes.extracted, their retry and dead-letter topics)",
            "until": _until(topic_retention_days),
            "why": "Kafka removes records only by topic retention "
            f"(VOC_TOPIC_RETENTION_DAYS={topic_retention_days:g}); until then every stage "
            "skips them, and the job's tombstone (its id, tenant and dates, nothing else) "
            "is kept so they stay recognisable",
        },
        {
            "what": "LLM answers cached by content hash (translations, insights), not by job",
            "until": "their cache TTL (VOC_LLM_CACHE_TTL_S, 7 days by default)",
            "why": "the entries are keyed by the text analysed, not by the job, so they "
            "cannot be found from the job; they expire on their own",
        },
    ]


async def delete_job(
    conn: AsyncConnection, cache: StatusCache, tenant_id: str, job_id: str
) -> dict[str, int] | None:
    """Delete the tenant's job: tombstone, rows, cached status. None if there is no such
    live job of the tenant."""
    marked = (await conn.execute(_TOMBSTONE, {"id": job_id, "tenant_id": tenant_id})).first()
    if marked is None:
        return None
    counts = await purge_rows(conn, [job_id])
    await cache.invalidate(tenant_id, job_id)
    metrics.JOBS_DELETED.labels("api").inc()
    log.info(
        "job deleted",
        extra={"tenant_id": tenant_id, "job_id": job_id, "rows": sum(counts.values())},
    )
    return counts


@dataclass
class SweepResult:
    """What one sweep did (`ran` False: another replica held the lock)."""

    ran: bool = False
    expired: list[str] = field(default_factory=list)
    repurged_rows: int = 0
    tombstones_dropped: int = 0


async def sweep(
    engine: AsyncEngine,
    cache: StatusCache,
    *,
    retention_days: float,
    topic_retention_days: float,
) -> SweepResult:
    """One retention sweep (see the module docstring); a no-op if another replica sweeps."""
    result = SweepResult()
    tombstone_age_s = (timedelta(days=topic_retention_days) + TOMBSTONE_MARGIN).total_seconds()
    async with engine.connect() as conn:
        # Session-level lock on this autocommit connection: gone with it if we die.
        if not (await conn.execute(_TRY_LOCK, {"key": SWEEP_LOCK})).scalar_one():
            return result
        try:
            result.ran = True
            if retention_days > 0:
                rows = (
                    await conn.execute(
                        _EXPIRE,
                        {"age_s": retention_days * 86400.0, "limit": EXPIRE_PER_SWEEP},
                    )
                ).all()
                result.expired = [r.id for r in rows]
                if rows:
                    await purge_rows(conn, result.expired)
                    for r in rows:
                        await cache.invalidate(r.tenant_id, r.id)
                    metrics.JOBS_DELETED.labels("retention").inc(len(rows))
            recent = [
                r.id for r in (await conn.execute(_RECENT_TOMBSTONES, {"age_s": tombstone_age_s}))
            ]
            if recent:
                result.repurged_rows = sum((await purge_rows(conn, recent)).values())
            old = [
                r.id
                for r in await conn.execute(
                    _OLD_TOMBSTONES, {"age_s": tombstone_age_s, "limit": EXPIRE_PER_SWEEP}
                )
            ]
            if old:
                await purge_rows(conn, old)
                dropped = await conn.execute(_DROP_TOMBSTONES, {"ids": old})
                result.tombstones_dropped = max(0, dropped.rowcount or 0)
        finally:
            await conn.execute(_UNLOCK, {"key": SWEEP_LOCK})
    return result


class Sweeper:
    """Runs `sweep` every `interval_s` (with jitter, so replicas do not line up)."""

    def __init__(self, engine: AsyncEngine, cache: StatusCache, settings: ApiSettings) -> None:
        self.engine = engine
        self.cache = cache
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sweeping in the background."""
        self._task = asyncio.create_task(self._run(), name="api-retention-sweep")

    async def stop(self) -> None:
        """Stop sweeping (a sweep in progress is cancelled; the next one redoes it)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = self.settings.sweep_interval_s
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                result = await sweep(
                    self.engine,
                    self.cache,
                    retention_days=self.settings.job_retention_days,
                    topic_retention_days=self.settings.kafka.retention_days,
                )
            except Exception:  # logged; the next sweep redoes whatever this one did not
                log.exception("retention sweep failed")
                continue
            if result.ran and (result.expired or result.repurged_rows or result.tombstones_dropped):
                log.info(
                    "retention sweep",
                    extra={
                        "expired": len(result.expired),
                        "repurged_rows": result.repurged_rows,
                        "tombstones_dropped": result.tombstones_dropped,
                    },
                )
