"""The report stage's Postgres adapter: every statement the stage runs.

Reads: jobs' progress (`progress`, one statement for many jobs), the sealed jobs a tick
re-checks (`candidates`), how many jobs are stalled. (Callback delivery reads and saves
the outbox itself: `callbacks.PgOutbox`.)

Writes go through `locked`: the per-job advisory lock (transaction-level, not waited
for) under which a job is re-read, its report built and its transition committed, all in
one transaction. Whoever holds the lock is the only builder of that job at that moment;
whoever finds it taken skips the job (its holder is on it). The transition itself is an
`UPDATE jobs .. WHERE status = ANY(allowed predecessors)`, so even a writer outside the
lock (an operator's cancel, `voc replay job`) is never overwritten: a refused transition
rolls the whole build back. With the transition, in the same transaction, go the report
row, the callback outbox rows and the `jobs.completed` events (`job_events`, insert-once
by `job_id:status`).

Events leave `job_events` through `claim_events` (the stage's leader, each tick): rows not
yet produced are claimed for a lease (committed), produced by the runner, then marked
produced (`events_produced`, a cleanup action after the broker's acks). A claim keeps a
second leader (the first one's lock connection broke while it kept working) from
producing the same event; a leader that dies after the broker's ack but before the mark
leaves the claim to expire, and the event is produced again (the same bytes and key): at
least once in that one case, exactly once otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services.report.aggregates import RawAggregates, load_raw
from services.report.callbacks import OUTBOX_COLUMNS
from services.report.core import INACTIVE_JOB_STATUSES, STALLED, JobProgress, Transition
from shared.db.leader import try_xact_lock
from shared.db.models import CallbackOutbox, JobEvent, Report
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert, upsert
from shared.stage import PostProduce

REPORTS = Upsert(
    Report.__table__,  # type: ignore[arg-type]
    key=("job_id",),
    columns=("job_id", "status", "coverage", "data", "generated_at"),
)
# A new outbox row must not reset one being delivered (a rebuild or a replay writes it
# again): insert if absent, else leave it.
OUTBOX_NEW = Upsert(
    CallbackOutbox.__table__,  # type: ignore[arg-type]
    key=("id",),
    columns=OUTBOX_COLUMNS,
    update=(),
)
# Insert-once: an event announced before keeps its row (and whether it was produced).
JOB_EVENTS = Upsert(
    JobEvent.__table__,  # type: ignore[arg-type]
    key=("id",),
    columns=("id", "job_id", "value"),
    update=(),
)

# Progress is measured by when reviews finish: the newest `review_themed` or standing
# dead letter of the job (or its seal, before any), `idle_s` ago on the database's clock.
Q_PROGRESS = """
SELECT j.id, j.tenant_id, j.product, j.target_language, j.callback_url, j.status,
       j.sealed_at IS NOT NULL AS sealed, j.submitted, j.rejected,
       (SELECT coalesce(sum(c.rows), 0) FROM ingest_chunks c WHERE c.job_id = j.id)::int
         AS ingest_rows,
       (SELECT count(*) FROM reviews r WHERE r.job_id = j.id)::int AS ingested,
       th.n AS themed,
       (SELECT count(DISTINCT d.review_id) FROM dead_letters d
         WHERE d.job_id = j.id AND d.redriven_at IS NULL AND d.review_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM review_themed t WHERE t.review_id = d.review_id)
       )::int AS dead_lettered,
       rp.status AS report_status,
       (rp.data -> 'progress' ->> 'done')::int AS report_done,
       (rp.data -> 'progress' ->> 'themed')::int AS report_themed,
       greatest(j.sealed_at, th.last_at, dl.last_at) AS last_progress_at,
       coalesce(extract(epoch FROM now() - greatest(j.sealed_at, th.last_at, dl.last_at)), 0)
         ::float8 AS idle_s
FROM jobs j
LEFT JOIN reports rp ON rp.job_id = j.id
CROSS JOIN LATERAL (
  SELECT count(*)::int AS n, max(t.created_at) AS last_at
  FROM review_themed t WHERE t.job_id = j.id
) th
CROSS JOIN LATERAL (
  SELECT max(d.created_at) AS last_at
  FROM dead_letters d WHERE d.job_id = j.id AND d.redriven_at IS NULL
) dl
WHERE j.id = ANY(%(ids)s)
ORDER BY j.id
"""

Q_CANDIDATES = """
SELECT j.id FROM jobs j LEFT JOIN reports rp ON rp.job_id = j.id
WHERE j.sealed_at IS NOT NULL AND j.status <> ALL(%(inactive)s)
  AND (rp.status IS NULL OR rp.status <> 'completed' OR j.status = 'replayed')
ORDER BY j.sealed_at
LIMIT %(limit)s
"""

Q_STALLED = "SELECT count(*) FROM jobs WHERE status = %s"

Q_TRANSITION = """
UPDATE jobs SET status = %(status)s, updated_at = now(),
       stalled_since = %(stalled_since)s, stall_reason = %(stall_reason)s
WHERE id = %(id)s AND status = ANY(%(allowed_from)s)
RETURNING id
"""

# A MATERIALIZED CTE, evaluated once, so the claim takes at most `limit` events whatever
# the plan (see services/learn/store.py, _CLAIM_SQL).
Q_CLAIM_EVENTS = """
WITH c AS MATERIALIZED (
  SELECT id FROM job_events
  WHERE produced_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
  ORDER BY seq
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
)
UPDATE job_events e SET claimed_until = now() + make_interval(secs => %(lease_s)s)
FROM c
WHERE e.id = c.id
RETURNING e.seq, e.id, e.job_id, e.value
"""

Q_EVENTS_PRODUCED = "UPDATE job_events SET produced_at = now() WHERE id = ANY(%s)"


async def _progress(
    conn: psycopg.AsyncConnection[Any], job_ids: Sequence[str]
) -> list[JobProgress]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q_PROGRESS, {"ids": list(job_ids)})
        rows = await cur.fetchall()
    return [_job_progress(r) for r in rows]


def _job_progress(r: dict[str, Any]) -> JobProgress:
    return JobProgress(
        job_id=r["id"],
        tenant_id=r["tenant_id"],
        product=r["product"],
        target_language=r["target_language"],
        callback_url=r["callback_url"],
        job_status=r["status"],
        sealed=bool(r["sealed"]),
        submitted=int(r["submitted"] or 0),
        rejected=int(r["rejected"] or 0),
        ingest_rows=int(r["ingest_rows"] or 0),
        ingested=int(r["ingested"] or 0),
        themed=int(r["themed"] or 0),
        dead_lettered=int(r["dead_lettered"] or 0),
        report_status=r["report_status"],
        report_done=r["report_done"],
        report_themed=r["report_themed"],
        idle_s=float(r["idle_s"] or 0.0),
        last_progress_at=r["last_progress_at"],
    )


class LockedJob:
    """A job whose report lock this process holds, in the transaction that will write it."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id

    async def progress(self) -> JobProgress | None:
        """The job's progress as it stands now (None if the job is gone)."""
        found = await _progress(self.conn, [self.job_id])
        return found[0] if found else None

    async def aggregates(self) -> RawAggregates:
        """The raw aggregate rows of the job."""
        return await load_raw(self.conn, self.job_id)

    async def commit(
        self,
        change: Transition,
        report: dict[str, Any] | None = None,
        outbox: Sequence[dict[str, Any]] = (),
        events: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Write the transition with its rows and commit; False (nothing written) if the
        job's status no longer allows it."""
        cur = await self.conn.execute(
            Q_TRANSITION,
            {
                "id": change.job_id,
                "status": change.status,
                "allowed_from": sorted(change.allowed_from),
                "stalled_since": change.stalled_since,
                "stall_reason": change.stall_reason,
            },
        )
        if await cur.fetchone() is None:
            await self.conn.rollback()
            return False
        if report is not None:
            await upsert(self.conn, REPORTS, [report])
        if outbox:
            await upsert(self.conn, OUTBOX_NEW, list(outbox))
        if events:
            await upsert(self.conn, JOB_EVENTS, list(events))
        await self.conn.commit()
        return True


class PgReportStore:
    """The report stage's reads, its locked builds and its event outbox, on Postgres."""

    def __init__(self, pool: ConnectionPool, lock_prefix: str = "report:") -> None:
        self.pool = pool
        self.lock_prefix = lock_prefix

    async def progress(self, job_ids: Sequence[str]) -> list[JobProgress]:
        """Completion counts of these jobs, one statement (unknown ids are skipped)."""
        if not job_ids:
            return []
        rows = await self.pool.fetch(Q_PROGRESS, {"ids": list(job_ids)}, row_factory=dict_row)
        return [_job_progress(r) for r in rows]

    async def candidates(self, limit: int) -> list[str]:
        """Sealed, active jobs without a final report, oldest seal first."""
        rows = await self.pool.fetch(
            Q_CANDIDATES, {"inactive": sorted(INACTIVE_JOB_STATUSES), "limit": limit}
        )
        return [str(r[0]) for r in rows]

    async def stalled_jobs(self) -> int:
        """How many jobs are stalled now."""
        rows = await self.pool.fetch(Q_STALLED, (STALLED,))
        return int(rows[0][0])

    @contextlib.asynccontextmanager
    async def locked(self, job_id: str) -> AsyncIterator[LockedJob | None]:
        """The job under its report lock, or None if another builder holds it now.

        The lock and everything read under it share one transaction, which `commit`
        ends; leaving the block without it rolls back (and so releases the lock).
        """
        async with self.pool.connection() as conn:
            if await try_xact_lock(conn, f"{self.lock_prefix}job:{job_id}"):
                yield LockedJob(conn, job_id)
            else:
                yield None
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.rollback()

    async def claim_events(self, limit: int, lease_s: float) -> list[tuple[str, str, bytes]]:
        """Claim up to `limit` unproduced job events for `lease_s` seconds, oldest first:
        (id, job id, record value)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(Q_CLAIM_EVENTS, {"limit": limit, "lease_s": lease_s})
            rows = await cur.fetchall()
            await conn.commit()
        return [(eid, job, bytes(value)) for _, eid, job, value in sorted(rows)]

    @staticmethod
    def events_produced(ids: Sequence[str]) -> PostProduce:
        """A cleanup action marking events produced (run after the broker's acks)."""
        id_list = list(ids)

        async def _mark(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(Q_EVENTS_PRODUCED, (id_list,))

        return _mark
