"""Job documents: a `jobs` row plus counts derived from the tables, rendered once as JSON.

Reads go through the Redis status cache (`cache.StatusCache`); the rendered bytes are what
is cached and served, so a cache hit costs one Redis GET and no serialisation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from shared.jobstatus import COUNT_KEYS, job_counts, progress, stage_progress

from . import store
from .cache import StatusCache
from .store import JobRow


def job_document(job: JobRow, counts: dict[str, int]) -> dict[str, Any]:
    """The `JobPublic` document of a job with the given counts."""
    return {
        "id": job.id,
        "product": job.product,
        "target_language": job.target_language,
        "callback_url": job.callback_url,
        "options": job.options,
        "status": job.status,
        "created_at": utc(job.created_at),
        "sealed_at": utc(job.sealed_at),
        "counts": counts,
        "stages": stage_progress(counts),
        "progress": progress(counts, sealed=job.sealed_at is not None, status=job.status),
    }


def utc(value: datetime | None) -> datetime | None:
    """A timestamp in UTC, whatever the database session's time zone."""
    return value.astimezone(UTC) if value is not None else None


def new_job_document(job: JobRow) -> dict[str, Any]:
    """The document of a job that was just created (nothing counted yet)."""
    return job_document(job, dict.fromkeys(COUNT_KEYS, 0))


def render(document: dict[str, Any]) -> bytes:
    """JSON bytes of a document (datetimes as RFC 3339)."""
    return orjson.dumps(document)


async def load_job_document(session: AsyncSession, job: JobRow) -> dict[str, Any]:
    """Count the job's rows and build its document."""
    conn = await session.connection()
    return job_document(job, await job_counts(conn, job.id))


async def read_job(
    session: AsyncSession, cache: StatusCache, tenant_id: str, job_id: str
) -> bytes | None:
    """The rendered document of the tenant's job (cache first), or None if there is none."""
    cached = await cache.get(tenant_id, job_id)
    if cached is not None:
        return cached
    job = await store.get_job(session, job_id, tenant_id)
    if job is None:
        return None
    body = render(await load_job_document(session, job))
    await cache.put(tenant_id, job_id, job.status, body)
    return body
