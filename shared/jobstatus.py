"""A job's progress, derived from the tables every stage upserts.

Counts are `COUNT(*)` per job over the rows each stage writes (reviews, translations,
review_insights, ...), never counters, so replaying a topic cannot double them. Only
`submitted` and `rejected` come from the `jobs` row: the API owns those and writes them
once per upload. `job_state` runs one statement for the counts and the job's stall (the
report stage sets `stalled` with a reason and since-when, and clears it); `stage_progress`
and `progress` turn the counts into the per-stage view and the 0..1 fraction the API shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.eta import JobEta

# The API caches rendered status documents under this key, and each API replica keeps
# the hot ones in memory too; whoever changes a job's status (the API, the report stage,
# `voc replay job`) calls `forget_status`, which deletes the key and tells every replica.
STATUS_CACHE_PREFIX = "voc:api:job:"
STATUS_CHANGED_CHANNEL = "voc:api:job:changed"


def status_cache_key(tenant_id: str, job_id: str) -> str:
    """The Redis key of a job's cached status document."""
    return f"{STATUS_CACHE_PREFIX}{tenant_id}:{job_id}"


async def forget_status(redis: Redis, tenant_id: str, job_id: str) -> None:
    """Drop the job's cached status document everywhere: the Redis key, and (by a message
    on `STATUS_CHANGED_CHANNEL`) every API replica's in-memory copy. Raises RedisError."""
    key = status_cache_key(tenant_id, job_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(key)
        pipe.publish(STATUS_CHANGED_CHANNEL, key)
        await pipe.execute()


# Job lifecycle as stored in jobs.status.
CREATED = "created"
RECEIVING = "receiving"
SEALED = "sealed"
STALLED = "stalled"  # no review finished for the report stage's stall timeout
REPORT_READY = "report_ready"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
# A tombstone: the job was deleted (API or retention), its data is gone, and stages skip
# its records until Kafka's retention has removed them (shared.stage.deleted).
DELETED = "deleted"
FINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})

COUNT_KEYS = (
    "submitted",
    "rejected",
    "ingested",
    "duplicates",
    "learned",
    "translated",
    "insights",
    "themed",
    "dead_lettered",
)
# Each stage's share of the work; sums to 1. The report counts once the job completes.
STAGE_WEIGHTS = {
    "ingest": 0.10,
    "learn": 0.05,
    "translate": 0.20,
    "insight": 0.40,
    "theme": 0.20,
    "report": 0.05,
}
_STAGE_COUNT = {
    "ingest": "ingested",
    "learn": "learned",
    "translate": "translated",
    "insight": "insights",
    "theme": "themed",
}

# One round trip; every subquery uses a (job_id) index. Parameter style: pyformat, which
# psycopg takes directly and SQLAlchemy passes through with exec_driver_sql.
JOB_COUNTS_SQL = """
SELECT
  coalesce((SELECT submitted FROM jobs WHERE id = %(job_id)s), 0) AS submitted,
  coalesce((SELECT rejected FROM jobs WHERE id = %(job_id)s), 0) AS rejected,
  (SELECT count(*) FROM reviews WHERE job_id = %(job_id)s) AS ingested,
  (SELECT coalesce(sum(duplicates), 0) FROM ingest_chunks WHERE job_id = %(job_id)s)
    AS duplicates,
  EXISTS (SELECT 1 FROM job_models WHERE job_id = %(job_id)s) AS has_model,
  (SELECT coalesce(sum(CASE WHEN jsonb_typeof(reviews) = 'array'
                            THEN jsonb_array_length(reviews) ELSE 0 END), 0)
     FROM learn_pending WHERE job_id = %(job_id)s) AS held,
  (SELECT count(*) FROM translations WHERE job_id = %(job_id)s) AS translated,
  (SELECT count(*) FROM review_insights WHERE job_id = %(job_id)s) AS insights,
  (SELECT count(*) FROM review_themed WHERE job_id = %(job_id)s) AS themed,
  (SELECT count(DISTINCT review_id) FROM dead_letters
     WHERE job_id = %(job_id)s AND redriven_at IS NULL AND review_id IS NOT NULL)
    AS dead_lettered,
  (SELECT stalled_since FROM jobs WHERE id = %(job_id)s AND status = 'stalled') AS stalled_since,
  (SELECT stall_reason FROM jobs WHERE id = %(job_id)s AND status = 'stalled') AS stall_reason
"""


@dataclass(frozen=True)
class Stall:
    """Why a job is stalled, and since when none of its reviews finished."""

    since: datetime
    reason: str


async def job_state(
    conn: psycopg.AsyncConnection[Any] | AsyncConnection, job_id: str
) -> tuple[dict[str, int], Stall | None]:
    """The job's counts (`COUNT_KEYS`, all zero for an unknown job) and its stall, if the
    job is stalled.

    `conn` is a psycopg async connection (stage services) or a SQLAlchemy `AsyncConnection`
    (the API); the query runs in the caller's transaction.
    """
    params = {"job_id": job_id}
    if isinstance(conn, AsyncConnection):
        result = await conn.exec_driver_sql(JOB_COUNTS_SQL, params)
        row: Any = result.one()
    else:
        cur = await conn.execute(JOB_COUNTS_SQL, params)
        row = await cur.fetchone()
    (
        submitted,
        rejected,
        ingested,
        duplicates,
        has_model,
        held,
        translated,
        insights,
        themed,
        dead,
        stalled_since,
        stall_reason,
    ) = row
    learned = max(0, int(ingested) - int(held)) if has_model else 0
    stall = Stall(stalled_since, stall_reason or "") if stalled_since is not None else None
    counts = {
        "submitted": int(submitted),
        "rejected": int(rejected),
        "ingested": int(ingested),
        "duplicates": int(duplicates),
        "learned": learned,
        "translated": int(translated),
        "insights": int(insights),
        "themed": int(themed),
        "dead_lettered": int(dead),
    }
    return counts, stall


def pending_reviews(counts: dict[str, int], *, sealed: bool) -> dict[str, int]:
    """Reviews each stage has not finished yet (dead-lettered ones count as finished).

    The input of `shared.eta.job_eta`. Expected reviews as in `progress`.
    """
    expected = counts["ingested"] if sealed else counts["submitted"]
    dead = counts["dead_lettered"]
    pending = {"ingest": max(0, counts["submitted"] - counts["ingested"] - counts["duplicates"])}
    for stage, key in _STAGE_COUNT.items():
        if stage != "ingest":
            pending[stage] = max(0, expected - counts[key] - dead)
    return pending


def stage_progress(counts: dict[str, int], eta: JobEta | None = None) -> dict[str, dict[str, Any]]:
    """Per-stage `{"done": n, "pending": p, "eta_s": s}`: reviews finished, still to do, and
    seconds until done at the stage's measured speed (None: not measured)."""
    out: dict[str, dict[str, Any]] = {}
    for stage, key in _STAGE_COUNT.items():
        doc: dict[str, Any] = {"done": counts[key]}
        if eta is not None and stage in eta.stages:
            doc["pending"] = eta.stages[stage].pending
            doc["eta_s"] = eta.stages[stage].eta_s
        out[stage] = doc
    return out


def progress(counts: dict[str, int], *, sealed: bool, status: str) -> float:
    """The weighted fraction (0..1) of the job's work done.

    Expected reviews are the ingested ones once the job is sealed (nothing more will come),
    else the submitted ones. Dead-lettered reviews count as finished for the stages after
    ingest (they will not come through), and the report's share counts once the report is
    ready (half) or the job completed (all).
    """
    if status == COMPLETED:
        return 1.0
    submitted = counts["submitted"]
    expected = counts["ingested"] if sealed else submitted
    if expected <= 0:
        return 0.0
    dead = counts["dead_lettered"]
    total = 0.0
    for stage, weight in STAGE_WEIGHTS.items():
        if stage == "ingest":
            seen = counts["ingested"] + counts["duplicates"]
            fraction = seen / submitted if submitted else 0.0
        elif stage == "report":
            fraction = 0.5 if status == REPORT_READY else 0.0
        else:
            fraction = (counts[_STAGE_COUNT[stage]] + dead) / expected
        total += weight * min(1.0, fraction)
    return round(min(total, 1.0), 4)
