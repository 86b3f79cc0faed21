"""The API's SQL: jobs, uploads and API keys, each a single statement (one round trip).

Plain SQL through SQLAlchemy's `text()` keeps the hot paths (job creation, key lookup) to
one small statement that psycopg prepares once per connection. A deleted job's row stays
as a tombstone (status `deleted`, see `deletion`): every read here treats it as absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.jobstatus import CREATED, DELETED, RECEIVING, SEALED


@dataclass(frozen=True, slots=True)
class JobRow:
    """A `jobs` row as the API reads it."""

    id: str
    tenant_id: str
    product: str
    target_language: str
    callback_url: str | None
    options: dict[str, Any]
    status: str
    submitted: int
    rejected: int
    sealed_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UploadRow:
    """The stored outcome of a completed upload."""

    id: str
    rows: int
    accepted: int
    duplicates: int
    rejected: int


_JOB_COLUMNS = (
    "id, tenant_id, product, target_language, callback_url, options, status, submitted, "
    "rejected, sealed_at, created_at"
)

# A key rotated with a grace period has a revocation time in the future: valid until then.
_TENANT_FOR_KEY = text(
    "SELECT tenant_id, extract(epoch FROM revoked_at - now())::float8 FROM api_keys "
    "WHERE key_hash = :key_hash AND (revoked_at IS NULL OR revoked_at > now())"
)
# Many jobs in one statement (`coalesce`): one array per column, unnested in order.
_INSERT_JOBS = text(
    "INSERT INTO jobs (id, tenant_id, product, target_language, callback_url, options) "
    "SELECT u.id, u.tenant_id, u.product, u.target_language, u.callback_url, u.options::jsonb "
    "FROM unnest(CAST(:ids AS text[]), CAST(:tenants AS text[]), CAST(:products AS text[]), "
    "CAST(:languages AS text[]), CAST(:callbacks AS text[]), CAST(:options AS text[])) "
    "AS u(id, tenant_id, product, target_language, callback_url, options) "
    f"RETURNING {_JOB_COLUMNS}"
)
_LIVE = f"status <> '{DELETED}'"
_GET_JOB = text(
    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = :id AND tenant_id = :tenant_id AND {_LIVE}"
)
_LIST_JOBS = text(
    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE tenant_id = :tenant_id AND {_LIVE} "
    "ORDER BY created_at DESC, id DESC LIMIT :limit"
)
_LIST_JOBS_AFTER = text(
    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE tenant_id = :tenant_id AND {_LIVE} "
    "AND (created_at, id) < (:created_at, :id) "
    "ORDER BY created_at DESC, id DESC LIMIT :limit"
)
_COUNT_JOBS = text(f"SELECT count(*) FROM jobs WHERE tenant_id = :tenant_id AND {_LIVE}")
_SEAL_JOB = text(
    "UPDATE jobs SET sealed_at = coalesce(sealed_at, now()), "
    f"status = CASE WHEN status IN ('{CREATED}', '{RECEIVING}') THEN '{SEALED}' ELSE status END, "
    "updated_at = now() "
    f"WHERE id = :id AND tenant_id = :tenant_id AND {_LIVE} RETURNING {_JOB_COLUMNS}"
)
_FIND_UPLOAD = text(
    "SELECT id, rows, accepted, duplicates, rejected FROM uploads "
    "WHERE id = :id AND job_id = :job_id"
)
# The upload row and the job's counters change together, and only the first time an
# upload id is recorded (a concurrent retry with the same Idempotency-Key adds nothing).
_RECORD_UPLOAD = text(
    "WITH up AS ("
    " INSERT INTO uploads (id, job_id, rows, accepted, duplicates, rejected)"
    " VALUES (:id, :job_id, :rows, :accepted, :duplicates, :rejected)"
    " ON CONFLICT (id) DO NOTHING RETURNING id) "
    "UPDATE jobs SET submitted = submitted + :accepted, rejected = rejected + :rejected, "
    f"status = CASE WHEN status = '{CREATED}' THEN '{RECEIVING}' ELSE status END, "
    "updated_at = now() "
    f"WHERE id = :job_id AND {_LIVE} AND EXISTS (SELECT 1 FROM up) RETURNING id"
)


def _job(row: Any) -> JobRow:
    return JobRow(*row)


async def tenant_for_key(session: AsyncSession, key_hash: str) -> tuple[str | None, float | None]:
    """The tenant owning a (not revoked) key, else None; and the seconds until the key's
    scheduled revocation (None: none scheduled)."""
    result = await session.execute(_TENANT_FOR_KEY, {"key_hash": key_hash})
    row = result.one_or_none()
    if row is None:
        return None, None
    return str(row[0]), None if row[1] is None else float(row[1])


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to create (`insert_jobs`)."""

    id: str
    tenant_id: str
    product: str
    target_language: str
    callback_url: str | None
    options: dict[str, Any]


async def insert_jobs(engine: AsyncEngine, jobs: Sequence[NewJob]) -> list[JobRow]:
    """Insert jobs in one statement (autocommit) and return them as stored, in order."""
    params = {
        "ids": [j.id for j in jobs],
        "tenants": [j.tenant_id for j in jobs],
        "products": [j.product for j in jobs],
        "languages": [j.target_language for j in jobs],
        "callbacks": [j.callback_url for j in jobs],
        "options": [orjson.dumps(j.options).decode() for j in jobs],
    }
    async with engine.connect() as conn:
        result = await conn.execute(_INSERT_JOBS, params)
        stored = {row[0]: _job(row) for row in result}
    return [stored[j.id] for j in jobs]


async def get_job(session: AsyncSession, job_id: str, tenant_id: str) -> JobRow | None:
    """The tenant's job, or None (also when the job belongs to another tenant)."""
    result = await session.execute(_GET_JOB, {"id": job_id, "tenant_id": tenant_id})
    row = result.one_or_none()
    return _job(row) if row is not None else None


async def list_jobs(
    session: AsyncSession, tenant_id: str, limit: int, after: tuple[datetime, str] | None
) -> list[JobRow]:
    """Up to `limit` of the tenant's jobs, newest first, strictly after the cursor `after`."""
    if after is None:
        result = await session.execute(_LIST_JOBS, {"tenant_id": tenant_id, "limit": limit})
    else:
        result = await session.execute(
            _LIST_JOBS_AFTER,
            {"tenant_id": tenant_id, "limit": limit, "created_at": after[0], "id": after[1]},
        )
    return [_job(row) for row in result.all()]


async def count_jobs(session: AsyncSession, tenant_id: str) -> int:
    """How many jobs the tenant has."""
    result = await session.execute(_COUNT_JOBS, {"tenant_id": tenant_id})
    return int(result.scalar_one())


async def seal_job(session: AsyncSession, job_id: str, tenant_id: str) -> JobRow | None:
    """Seal the job (idempotent: the first seal time is kept); None if not the tenant's."""
    result = await session.execute(_SEAL_JOB, {"id": job_id, "tenant_id": tenant_id})
    row = result.one_or_none()
    return _job(row) if row is not None else None


async def find_upload(session: AsyncSession, upload_id: str, job_id: str) -> UploadRow | None:
    """A completed upload of the job with this id, else None."""
    result = await session.execute(_FIND_UPLOAD, {"id": upload_id, "job_id": job_id})
    row = result.one_or_none()
    return UploadRow(*row) if row is not None else None


async def record_upload(
    session: AsyncSession,
    *,
    upload_id: str,
    job_id: str,
    rows: int,
    accepted: int,
    duplicates: int,
    rejected: int,
) -> bool:
    """Store the upload and add its counts to the job; False if it was already recorded."""
    result = await session.execute(
        _RECORD_UPLOAD,
        {
            "id": upload_id,
            "job_id": job_id,
            "rows": rows,
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
        },
    )
    return result.one_or_none() is not None
