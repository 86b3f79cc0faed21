"""The learn stage's Postgres adapter: every statement the stage runs.

- `jobs`: what `handle` needs to know about the jobs of a batch;
- `pending_jobs`: the jobs with held batches, **tenants interleaved** (each tenant's
  oldest job first, then each tenant's second, ...; oldest first within a tenant) and at
  most `limit` of them, so one tenant with thousands of jobs never pushes another
  tenant's job out of a tick;
- `claim_batches` / `release_done`: a leader *claims* the held batches it releases
  (`claimed_until`, committed before the events are produced) and deletes them once the
  events are acknowledged. Another replica that leads meanwhile (the lock connection of
  the first one broke while it kept working) skips claimed batches, so a batch is never
  released by two living replicas; a leader that dies with a claim leaves it to expire,
  and the next leader releases the batch then (at least once: the same record again,
  which translate upserts by review id, so no row doubles);
- `job_lock`: the per-job lock under which a job is learned, on its own connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from services.learn.core import PendingJob, SampleReview
from shared.db.leader import try_xact_lock
from shared.db.models import JobModel, LearnPending
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert, upsert
from shared.stage import PostProduce

# Held batches: a re-held batch (a replayed input record) keeps a claim on its row.
LEARN_PENDING = Upsert(
    LearnPending.__table__,  # type: ignore[arg-type]
    key=("job_id", "batch_key"),
    columns=("job_id", "batch_key", "reviews"),
)
# Insert-once: a conflict keeps the stored model (DO UPDATE SET job_id = job_id).
JOB_MODELS = Upsert(JobModel.__table__, key=("job_id",), update=())  # type: ignore[arg-type]

_JOBS_SQL = """
SELECT j.id, j.target_language, EXISTS (SELECT 1 FROM job_models m WHERE m.job_id = j.id)
FROM jobs j WHERE j.id = ANY(%s)
"""
# Review counts are summed only for jobs still without a model (no detoasting otherwise).
# `turn` numbers each tenant's jobs oldest first; ordering by it interleaves the tenants.
_PENDING_JOBS_SQL = """
WITH held AS (
  SELECT p.job_id, count(*)::int AS batches, min(p.created_at) AS oldest,
         coalesce(sum(CASE WHEN m.job_id IS NULL AND jsonb_typeof(p.reviews) = 'array'
                           THEN jsonb_array_length(p.reviews) END), 0)::int AS reviews,
         bool_or(m.job_id IS NOT NULL) AS has_model
  FROM learn_pending p LEFT JOIN job_models m ON m.job_id = p.job_id
  GROUP BY p.job_id
), turns AS (
  SELECT h.*, j.tenant_id, j.product, j.target_language, j.sealed_at IS NOT NULL AS sealed,
         row_number() OVER (PARTITION BY j.tenant_id ORDER BY h.oldest, h.job_id) AS turn
  FROM held h JOIN jobs j ON j.id = h.job_id
)
SELECT job_id, tenant_id, product, target_language, batches, reviews,
       extract(epoch FROM now() - oldest)::float8, sealed, has_model
FROM turns
ORDER BY turn, oldest, job_id
LIMIT %(limit)s
"""
# The batches to claim are a MATERIALIZED CTE, evaluated once: as a subquery in FROM the
# planner may rescan it per outer row, each rescan skipping the rows this statement has
# already updated, and so claim every held batch instead of `limit`
# (tests/integration/test_claim_limits.py).
_CLAIM_SQL = """
WITH c AS MATERIALIZED (
  SELECT job_id, batch_key FROM learn_pending
  WHERE job_id = %(job)s AND (claimed_until IS NULL OR claimed_until < now())
  ORDER BY batch_key
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
)
UPDATE learn_pending p SET claimed_until = now() + make_interval(secs => %(lease_s)s)
FROM c
WHERE p.job_id = c.job_id AND p.batch_key = c.batch_key
RETURNING p.batch_key, p.reviews
"""
_DELETE_PENDING_SQL = "DELETE FROM learn_pending WHERE job_id = %s AND batch_key = ANY(%s)"
_SAMPLE_SQL = "SELECT id, text, rating FROM reviews WHERE job_id = %s ORDER BY id LIMIT %s"
_HAS_MODEL_SQL = "SELECT EXISTS (SELECT 1 FROM job_models WHERE job_id = %s)"


@dataclass(frozen=True)
class JobState:
    """What `handle` needs to know about a job."""

    target_language: str
    has_model: bool


class LockedJob:
    """A job whose learn lock this process holds, on its own open transaction."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id

    async def has_model(self) -> bool:
        """Whether a model was stored meanwhile (by another replica or an earlier run)."""
        cur = await self.conn.execute(_HAS_MODEL_SQL, (self.job_id,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def sample(self, size: int) -> list[SampleReview]:
        """A deterministic sample: the job's first `size` reviews by id (uuid5: unbiased)."""
        cur = await self.conn.execute(_SAMPLE_SQL, (self.job_id, size))
        return [SampleReview(i, t, r) for i, t, r in await cur.fetchall()]

    async def store_model(self, row: dict[str, Any]) -> None:
        """Insert the model (a present one is kept) and commit, which releases the lock."""
        await upsert(self.conn, JOB_MODELS, [row])
        await self.conn.commit()


class PgLearnStore:
    """The learn stage's reads, claims and its one locked write, on Postgres."""

    def __init__(self, pool: ConnectionPool, url: str, lock_prefix: str) -> None:
        self.pool = pool
        self.url = url
        self.lock_prefix = lock_prefix

    async def jobs(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """The existing jobs among `job_ids`, with their target language and model flag."""
        rows = await self.pool.fetch(_JOBS_SQL, (list(job_ids),))
        return {jid: JobState(lang, bool(has)) for jid, lang, has in rows}

    async def pending_jobs(self, limit: int) -> list[PendingJob]:
        """Up to `limit` jobs with held batches, tenants interleaved (module docstring)."""
        rows = await self.pool.fetch(_PENDING_JOBS_SQL, {"limit": limit})
        return [
            PendingJob(
                job_id=r[0],
                tenant_id=r[1],
                product=r[2],
                target_language=r[3],
                pending_batches=r[4],
                pending_reviews=r[5],
                age_s=r[6],
                sealed=bool(r[7]),
                has_model=bool(r[8]),
            )
            for r in rows
        ]

    async def claim_batches(
        self, job_id: str, limit: int, lease_s: float
    ) -> list[tuple[str, list[Any]]]:
        """Claim up to `limit` unclaimed held batches of a job for `lease_s` seconds.

        Committed at once, so any other replica sees the claim; (batch key, reviews).
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _CLAIM_SQL, {"job": job_id, "limit": limit, "lease_s": lease_s}
            )
            rows = await cur.fetchall()
            await conn.commit()
        return sorted((key, reviews) for key, reviews in rows)

    @staticmethod
    def release_done(job_id: str, keys: Sequence[str]) -> PostProduce:
        """A cleanup action deleting released batches (run after their events were produced)."""
        key_list = list(keys)

        async def _delete(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(_DELETE_PENDING_SQL, (job_id, key_list))

        return _delete

    @contextlib.asynccontextmanager
    async def job_lock(self, job_id: str) -> AsyncIterator[LockedJob | None]:
        """Hold the job's learn lock on a dedicated connection, or yield None if another
        process holds it. The lock is transaction-level: it ends with the transaction
        (`store_model` commits; leaving the block rolls back), or with the connection.

        A dedicated connection, not the pool's: the LLM call happens under the lock and
        would otherwise hold a pool connection the batches need for that long.
        """
        conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=10)
        try:
            held = await try_xact_lock(conn, f"{self.lock_prefix}job:{job_id}")
            yield LockedJob(conn, job_id) if held else None
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
            await conn.close()
