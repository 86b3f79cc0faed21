"""`/v1/jobs/{job_id}/reviews`: stream an upload of reviews (JSON, NDJSON or CSV) to a job.

The body is parsed as it arrives and forwarded in chunks to `reviews.submitted`; the answer
(202) comes once Kafka acknowledged every chunk and the upload is recorded. Bad rows are
rejected alone, with their row number and reason, while the good rows go through.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from shared.topics import REVIEWS_SUBMITTED

from .. import metrics, store
from ..deps import ClientsDep, JobId, SessionDep, TenantDep
from ..schemas import ErrorPublic, UploadPublic
from ..upload.chunks import ChunkBuilder, UploadSummary
from ..upload.parsing import UnsupportedMediaType, UploadFormatError, body_format, make_parser
from ..upload.stream import KafkaChunkSink, PayloadTooLarge, TooManyRows, stream_upload
from .jobs import AUTH_ERRORS, NOT_FOUND, job_not_found, json_response

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["reviews"])

IDEMPOTENCY_NS = uuid.UUID("8d6f2a51-4c1e-4a5e-9a7e-2b0f1d3c5e77")

_ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "maxLength": 10000},
        "review_id": {"type": "string", "description": "your id; repeats are duplicates"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "language": {"type": "string", "description": "BCP 47 tag, detected if absent"},
        "created_at": {"type": "string", "description": "ISO 8601 date or date-time"},
        "author": {"type": "string"},
        "source": {"type": "string", "description": "e.g. amazon, app-store"},
    },
}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Reviews as a JSON array, NDJSON (one object per line) or CSV with a "
        "header row. Streamed: bodies of 100k+ rows are fine.",
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": _ROW_SCHEMA},
                "example": [
                    {"review_id": "r1", "text": "Great sound, poor fit", "rating": 4},
                    {"text": "Akku hält ewig", "language": "de", "created_at": "2026-10-01"},
                ],
            },
            "application/x-ndjson": {
                "schema": {"type": "string"},
                "example": '{"review_id": "r1", "text": "Great sound, poor fit", "rating": 4}\n'
                '{"text": "Akku hält ewig", "language": "de"}\n',
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": 'review_id,text,rating\nr1,"Great sound,\npoor fit",4\n',
            },
        },
    }
}


def upload_id_for(tenant_id: str, job_id: str, idempotency_key: str | None) -> str:
    """The upload's id: derived from the Idempotency-Key (so a retry reuses it) or random."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(IDEMPOTENCY_NS, f"{tenant_id}\x00{job_id}\x00{idempotency_key}"))


def _answer(upload_id: str, summary: UploadSummary) -> dict[str, Any]:
    return {
        "upload_id": upload_id,
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "rejected_count": summary.rejected_count,
        "replayed": False,
    }


def _partial(message: str, sink: KafkaChunkSink) -> str:
    if not sink.rows_sent:
        return message
    return (
        f"{message} ({sink.rows_sent} rows of this body had already been forwarded; they are "
        "kept, and sending the corrected body with the same Idempotency-Key stores each "
        "review once)"
    )


def _content_length(request: Request, limit: int) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        return
    try:
        length = int(raw)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="invalid Content-Length") from None
    if length > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"upload of {length} bytes exceeds the limit of {limit} bytes; "
            "split it into several uploads",
        )


@router.post(
    "/{job_id}/reviews",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadPublic,
    responses=AUTH_ERRORS
    | NOT_FOUND
    | {
        400: {"model": ErrorPublic, "description": "malformed body (e.g. not a JSON array)"},
        409: {"model": ErrorPublic, "description": "the job is sealed"},
        413: {"model": ErrorPublic, "description": "body over the upload's byte or row limit"},
        415: {"model": ErrorPublic, "description": "unsupported Content-Type"},
        422: {"model": ErrorPublic, "description": "unusable CSV header (no 'text' column)"},
        503: {"model": ErrorPublic, "description": "Kafka unavailable: retry (same key)"},
    },
    openapi_extra=UPLOAD_BODY,
    summary="Upload reviews to a job",
)
async def upload_reviews(
    job_id: JobId,
    request: Request,
    tenant: TenantDep,
    session: SessionDep,
    clients: ClientsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="makes a retried upload safe: the same key answers the first upload's "
            "counts, or re-sends identical chunks (stored once) if it did not complete",
        ),
    ] = None,
) -> Response:
    """Stream reviews into the job; bad rows are listed, good rows go through."""
    settings = clients.settings
    job = await store.get_job(session, job_id, tenant.id)
    if job is None:
        raise job_not_found()
    upload_id = upload_id_for(tenant.id, job_id, idempotency_key)
    if idempotency_key is not None:
        prior = await store.find_upload(session, upload_id, job_id)
        if prior is not None:
            replay = UploadSummary(
                rows=prior.rows,
                accepted=prior.accepted,
                duplicates=prior.duplicates,
                rejected_count=prior.rejected,
            )
            return json_response(
                orjson.dumps(_answer(upload_id, replay) | {"replayed": True}),
                status.HTTP_202_ACCEPTED,
            )
    if job.sealed_at is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="job is sealed and takes no more uploads; create a new job",
        )
    await session.commit()  # give the connection back while the body streams in
    try:
        fmt = body_format(request.headers.get("content-type"))
    except UnsupportedMediaType as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=str(exc)) from None
    _content_length(request, settings.max_upload_bytes)
    sink = KafkaChunkSink(
        clients.kafka.producer,
        REVIEWS_SUBMITTED.full_name(settings.kafka.topic_prefix),
        settings.max_inflight_chunks,
    )
    builder = ChunkBuilder(
        job_id,
        tenant.id,
        upload_id,
        max_rows=settings.chunk_rows,
        max_bytes=settings.chunk_bytes,
        max_listed=settings.max_listed_rejections,
    )
    started = time.perf_counter()
    try:
        summary = await stream_upload(
            request.stream(),
            make_parser(fmt, settings.max_row_bytes),
            builder,
            sink,
            max_bytes=settings.max_upload_bytes,
            max_rows=settings.max_upload_rows,
        )
    except UploadFormatError as exc:
        raise HTTPException(exc.status_code, detail=_partial(exc.message, sink)) from None
    except (PayloadTooLarge, TooManyRows) as exc:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=_partial(f"{exc}; split it into several uploads", sink),
        ) from None
    except ClientDisconnect:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=_partial("client disconnected", sink)
        ) from None
    finally:
        metrics.UPLOAD_BYTES.inc(builder.summary.bytes_read)
    await store.record_upload(
        session,
        upload_id=upload_id,
        job_id=job_id,
        rows=summary.rows,
        accepted=summary.accepted,
        duplicates=summary.duplicates,
        rejected=summary.rejected_count,
    )
    await session.commit()
    await clients.status_cache.invalidate(tenant.id, job_id)
    metrics.record_upload(summary.accepted, summary.duplicates, summary.rejected_count)
    log.info(
        "upload accepted",
        extra={
            "tenant_id": tenant.id,
            "job_id": job_id,
            "upload_id": upload_id,
            "format": fmt.value,
            "bytes": summary.bytes_read,
            "rows": summary.rows,
            "accepted": summary.accepted,
            "duplicates": summary.duplicates,
            "rejected": summary.rejected_count,
            "chunks": summary.chunks,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return json_response(orjson.dumps(_answer(upload_id, summary)), status.HTTP_202_ACCEPTED)
