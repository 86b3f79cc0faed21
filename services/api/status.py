"""Job documents: a `jobs` row plus counts derived from the tables, rendered once as JSON.

Reads go through the Redis status cache (`cache.StatusCache`); the rendered bytes are what
is cached and served, so a cache hit costs one Redis GET and no serialisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.eta import StageRate, job_eta, read_stage_rates
from shared.jobstatus import (
    COUNT_KEYS,
    FINAL_STATUSES,
    Stall,
    job_state,
    pending_reviews,
    progress,
    stage_progress,
)

from . import store
from .cache import StatusCache
from .store import JobRow

log = logging.getLogger(__name__)


def job_document(
    job: JobRow,
    counts: dict[str, int],
    rates: Mapping[str, StageRate] | None = None,
    stall: Stall | None = None,
) -> dict[str, Any]:
    """The `JobPublic` document of a job with the given counts, stage speeds and stall
    (`stall` is null unless the job is stalled: then its reason and since when)."""
    sealed = job.sealed_at is not None
    eta = job_eta(pending_reviews(counts, sealed=sealed), rates or {})
    return {
        "id": job.id,
        "product": job.product,
        "target_language": job.target_language,
        "callback_url": job.callback_url,
        "options": job.options,
        "status": job.status,
        "stall": {"since": utc(stall.since), "reason": stall.reason} if stall else None,
        "created_at": utc(job.created_at),
        "sealed_at": utc(job.sealed_at),
        "counts": counts,
        "stages": stage_progress(counts, eta),
        "progress": progress(counts, sealed=sealed, status=job.status),
        "eta_s": 0.0 if job.status in FINAL_STATUSES else eta.eta_s,
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


async def load_job_document(
    session: AsyncSession, job: JobRow, rates: Mapping[str, StageRate] | None = None
) -> dict[str, Any]:
    """Count the job's rows and build its document."""
    conn = await session.connection()
    counts, stall = await job_state(conn, job.id)
    return job_document(job, counts, rates, stall)


async def stage_rates(cache: StatusCache) -> dict[str, StageRate]:
    """The stage speeds the lag exporter publishes (empty if Redis or the exporter is down)."""
    try:
        return await read_stage_rates(cache.redis)
    except RedisError as exc:
        log.warning("stage rates unavailable", extra={"error": str(exc)})
        return {}


async def read_job(
    sessions: async_sessionmaker[AsyncSession], cache: StatusCache, tenant_id: str, job_id: str
) -> bytes | None:
    """The rendered document of the tenant's job (cache first), or None if there is none.
    A session is opened only on a cache miss: a hit touches neither the pool nor SQL."""

    async def load() -> tuple[str, bytes] | None:
        async with sessions() as session:
            job = await store.get_job(session, job_id, tenant_id)
            if job is None:
                return None
            document = await load_job_document(session, job, await stage_rates(cache))
        return job.status, render(document)

    return await cache.get_or_load(tenant_id, job_id, load)
