"""`/v1/jobs`: create, list, read, seal and delete analysis jobs."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response

from .. import store
from ..deletion import delete_job as delete_job_rows
from ..deletion import retained
from ..deps import ClientsDep, JobId, SessionDep, TenantDep, is_id
from ..schemas import ErrorPublic, JobCreate, JobDeleted, JobPublic, JobsPublic
from ..status import load_job_document, new_job_document, read_job, render, utc

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "missing or invalid API key"},
    429: {"model": ErrorPublic, "description": "rate limit exceeded (see Retry-After)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "no such job for this tenant"}
}


def json_response(body: bytes, status_code: int = 200) -> Response:
    """A response with pre-rendered JSON."""
    return Response(body, status_code=status_code, media_type="application/json")


def job_not_found() -> HTTPException:
    """The one answer for a job that is absent or another tenant's."""
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="job not found")


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """An opaque cursor pointing after the given job."""
    raw = orjson.dumps([created_at.isoformat(), job_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor points after; 422 if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = orjson.loads(raw)
        position = (datetime.fromisoformat(created_at), job_id)
        if not isinstance(job_id, str) or not is_id(job_id):
            raise ValueError("not a job id")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["query", "cursor"],
                    "msg": "invalid cursor: pass the 'next' value of the previous page",
                    "type": "value_error",
                }
            ],
        ) from None
    return position


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses=AUTH_ERRORS,
    summary="Create a job",
)
async def create_job(body: JobCreate, tenant: TenantDep, clients: ClientsDep) -> Response:
    """Create an analysis job and return it at once; upload reviews to it next."""
    job = await clients.job_inserts.submit(
        store.NewJob(
            id=str(uuid.uuid4()),
            tenant_id=tenant.id,
            product=body.product,
            target_language=body.target_language,
            callback_url=str(body.callback_url) if body.callback_url is not None else None,
            options=body.options,
        )
    )
    return json_response(render(new_job_document(job)), status.HTTP_201_CREATED)


@router.get("", response_model=JobsPublic, responses=AUTH_ERRORS, summary="List jobs")
async def list_jobs(
    tenant: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="'next' of the previous page")
    ] = None,
) -> Response:
    """The tenant's jobs, newest first, a page at a time (follow `next`)."""
    after = decode_cursor(cursor) if cursor else None
    rows = await store.list_jobs(session, tenant.id, limit + 1, after)
    total = await store.count_jobs(session, tenant.id)
    page = rows[:limit]
    following = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    data = [
        {
            "id": job.id,
            "product": job.product,
            "target_language": job.target_language,
            "status": job.status,
            "created_at": utc(job.created_at),
            "sealed_at": utc(job.sealed_at),
            "submitted": job.submitted,
            "rejected": job.rejected,
        }
        for job in page
    ]
    return json_response(orjson.dumps({"data": data, "count": total, "next": following}))


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses=AUTH_ERRORS | NOT_FOUND,
    summary="Read a job's status and progress",
)
async def get_job(job_id: JobId, tenant: TenantDep, clients: ClientsDep) -> Response:
    """The job with counts per stage and overall progress (served from a short cache)."""
    body = await read_job(clients.sessions, clients.status_cache, tenant.id, job_id)
    if body is None:
        raise job_not_found()
    return json_response(body)


@router.post(
    "/{job_id}/seal",
    response_model=JobPublic,
    responses=AUTH_ERRORS | NOT_FOUND,
    summary="Seal a job: no more uploads",
)
async def seal_job(
    job_id: JobId, tenant: TenantDep, session: SessionDep, clients: ClientsDep
) -> Response:
    """Mark the job complete on the client side (idempotent); uploads then answer 409."""
    job = await store.seal_job(session, job_id, tenant.id)
    if job is None:
        raise job_not_found()
    document = await load_job_document(session, job)
    await session.commit()
    body = render(document)
    await clients.status_cache.invalidate(tenant.id, job_id)
    return json_response(body)


@router.delete(
    "/{job_id}",
    response_model=JobDeleted,
    responses=AUTH_ERRORS | NOT_FOUND,
    summary="Delete a job and everything derived from it",
)
async def delete_job(
    job_id: JobId, tenant: TenantDep, session: SessionDep, clients: ClientsDep
) -> Response:
    """Delete the job's reviews, results, report, dead letters and cached status at once;
    a job being processed stops (its remaining records are skipped by every stage). The
    answer says what cannot be removed at once and until when it stays."""
    conn = await session.connection()
    counts = await delete_job_rows(conn, clients.status_cache, tenant.id, job_id)
    if counts is None:
        raise job_not_found()
    body = {
        "id": job_id,
        "status": "deleted",
        "deleted": counts,
        "retained": retained(clients.settings.kafka.retention_days),
    }
    return json_response(orjson.dumps(body))
