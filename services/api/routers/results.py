"""A job's results: the report (JSON and an HTML page), its insights and its themes.

- `GET /v1/jobs/{id}/report`: 200 with the report document once one exists (`status`
  `report_ready` while the rest finishes, then `completed`); **202** with the job's status
  and a `Retry-After` while the job is still being analysed (the job exists, the answer is
  "not yet", which a client polls without treating it as an error); 404 only for a job
  that does not exist or belongs to another tenant.
- `GET /v1/jobs/{id}/report.html`: the same report as a self-contained page with charts
  (`shared.report_page`), or a small page that refreshes itself while it is not ready.
- `GET /v1/jobs/{id}/insights`: filter by dimension, sentiment, theme; keyset-paginated.
- `GET /v1/jobs/{id}/themes`: largest first, with sentiment mix; paginated.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.report_page import render_report_html

from .. import store
from ..deps import SessionDep, TenantDep
from ..schemas import ErrorPublic
from .jobs import AUTH_ERRORS, MAX_JOB_ID, NOT_FOUND, job_not_found, json_response

router = APIRouter(prefix="/v1/jobs", tags=["results"])

RETRY_AFTER_S = 5
PENDING: dict[int | str, dict[str, Any]] = {
    202: {"model": None, "description": "the job exists but its report is not ready yet"}
}

_REPORT = text(
    "SELECT (data || jsonb_build_object('generated_at', generated_at))::text "
    "FROM reports WHERE job_id = :job_id"
)

_INSIGHTS = text(
    """
    SELECT i.id, i.review_id, i.dimension, i.aspect, i.sentiment, i.score, i.quote,
           i.quote_start, i.quote_end, i.five_w, m.theme_id
    FROM insights i
    LEFT JOIN theme_members m ON m.insight_id = i.id
    WHERE i.job_id = :job_id
      AND (CAST(:dimension AS text) IS NULL OR i.dimension = :dimension)
      AND (CAST(:sentiment AS text) IS NULL OR i.sentiment = :sentiment)
      AND (CAST(:theme_id AS text) IS NULL OR m.theme_id = :theme_id)
      AND (CAST(:after AS text) IS NULL OR i.id > :after)
    ORDER BY i.id
    LIMIT :limit
    """
)
_INSIGHTS_COUNT = text(
    """
    SELECT count(*)
    FROM insights i
    LEFT JOIN theme_members m ON m.insight_id = i.id
    WHERE i.job_id = :job_id
      AND (CAST(:dimension AS text) IS NULL OR i.dimension = :dimension)
      AND (CAST(:sentiment AS text) IS NULL OR i.sentiment = :sentiment)
      AND (CAST(:theme_id AS text) IS NULL OR m.theme_id = :theme_id)
    """
)
_THEMES = text(
    """
    SELECT t.id, t.name, t.description, t.dimension, count(m.insight_id) AS size,
           count(*) FILTER (WHERE i.sentiment = 'positive') AS positive,
           count(*) FILTER (WHERE i.sentiment = 'negative') AS negative,
           count(*) FILTER (WHERE i.sentiment = 'neutral') AS neutral,
           avg(i.score) AS mean_score,
           count(*) OVER () AS total
    FROM themes t
    LEFT JOIN theme_members m ON m.theme_id = t.id AND m.job_id = t.job_id
    LEFT JOIN insights i ON i.id = m.insight_id
    WHERE t.job_id = :job_id
      AND (CAST(:dimension AS text) IS NULL OR t.dimension = :dimension)
    GROUP BY t.id, t.name, t.description, t.dimension
    ORDER BY size DESC, t.name, t.id
    OFFSET :offset LIMIT :limit
    """
)


class ReportPending(BaseModel):
    """The 202 answer: the job exists, its report does not yet."""

    job_id: str
    status: str
    detail: str


class InsightPublic(BaseModel):
    """One insight with its verbatim quote (offsets into the review's analysed text)."""

    id: str
    review_id: str
    dimension: str
    aspect: str
    sentiment: Literal["positive", "negative", "neutral"]
    score: float
    quote: str
    quote_start: int
    quote_end: int
    five_w: dict[str, Any]
    theme_id: str | None


class InsightsPublic(BaseModel):
    """A page of insights."""

    data: list[InsightPublic]
    count: int = Field(description="insights matching the filters, in all")
    next: str | None = Field(description="cursor of the next page, null on the last")


class SentimentMix(BaseModel):
    """Insights of a theme per sentiment."""

    positive: int
    negative: int
    neutral: int


class ThemePublic(BaseModel):
    """A theme with its size and sentiment."""

    id: str
    name: str
    description: str
    dimension: str
    size: int
    sentiment: SentimentMix
    mean_score: float | None


class ThemesPublic(BaseModel):
    """A page of themes, largest first."""

    data: list[ThemePublic]
    count: int = Field(description="themes matching the filters, in all")
    next: str | None = Field(description="cursor of the next page, null on the last")


async def _job_or_404(session: AsyncSession, job_id: str, tenant_id: str) -> store.JobRow:
    if len(job_id) > MAX_JOB_ID:
        raise job_not_found()
    job = await store.get_job(session, job_id, tenant_id)
    if job is None:
        raise job_not_found()
    return job


async def _report_json(session: AsyncSession, job_id: str) -> str | None:
    result = await session.execute(_REPORT, {"job_id": job_id})
    value = result.scalar_one_or_none()
    return str(value) if value is not None else None


def _cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _bad_cursor() -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[
            {
                "loc": ["query", "cursor"],
                "msg": "invalid cursor: pass the 'next' value of the previous page",
                "type": "value_error",
            }
        ],
    )


def _uncursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error):
        raise _bad_cursor() from None


@router.get(
    "/{job_id}/report",
    responses=AUTH_ERRORS | NOT_FOUND | PENDING,
    summary="Read a job's report (JSON)",
)
async def get_report(job_id: str, tenant: TenantDep, session: SessionDep) -> Response:
    """The report document; 202 with the job's status while it is not ready yet."""
    job = await _job_or_404(session, job_id, tenant.id)
    body = await _report_json(session, job.id)
    if body is None:
        pending = ReportPending(
            job_id=job.id, status=job.status, detail="the report is not ready yet"
        )
        return Response(
            pending.model_dump_json(),
            status_code=status.HTTP_202_ACCEPTED,
            media_type="application/json",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return Response(body, media_type="application/json")


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses={
        **AUTH_ERRORS,
        **NOT_FOUND,
        202: {"description": "a page that reloads itself until the report is ready"},
    },
    summary="Read a job's report as a web page",
)
async def get_report_html(job_id: str, tenant: TenantDep, session: SessionDep) -> HTMLResponse:
    """A self-contained page with charts (no external JS or CSS)."""
    job = await _job_or_404(session, job_id, tenant.id)
    body = await _report_json(session, job.id)
    if body is None:
        page = (
            "<!doctype html><html><head><meta charset=utf-8>"
            f'<meta http-equiv="refresh" content="{RETRY_AFTER_S}">'
            "<title>Report not ready</title></head><body style='font-family:sans-serif'>"
            f"<p>The report of this job is not ready yet (status: {job.status}). "
            "This page reloads itself.</p></body></html>"
        )
        return HTMLResponse(
            page, status_code=status.HTTP_202_ACCEPTED, headers={"Retry-After": str(RETRY_AFTER_S)}
        )
    return HTMLResponse(render_report_html(orjson.loads(body)))


@router.get(
    "/{job_id}/insights",
    response_model=InsightsPublic,
    responses=AUTH_ERRORS | NOT_FOUND,
    summary="List a job's insights",
)
async def list_insights(
    job_id: str,
    tenant: TenantDep,
    session: SessionDep,
    dimension: Annotated[str | None, Query(max_length=200)] = None,
    sentiment: Literal["positive", "negative", "neutral"] | None = None,
    theme_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="insights per page")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=200, description="'next' of the previous page")
    ] = None,
) -> Response:
    """Insights of the job in a stable order, filtered, a page at a time (follow `next`)."""
    job = await _job_or_404(session, job_id, tenant.id)
    filters = {
        "job_id": job.id,
        "dimension": dimension,
        "sentiment": sentiment,
        "theme_id": theme_id,
    }
    after = _uncursor(cursor)
    rows = (await session.execute(_INSIGHTS, {**filters, "after": after, "limit": limit + 1})).all()
    total = (await session.execute(_INSIGHTS_COUNT, filters)).scalar_one()
    page = rows[:limit]
    data = [
        {
            "id": r.id,
            "review_id": r.review_id,
            "dimension": r.dimension,
            "aspect": r.aspect,
            "sentiment": r.sentiment,
            "score": r.score,
            "quote": r.quote,
            "quote_start": r.quote_start,
            "quote_end": r.quote_end,
            "five_w": r.five_w,
            "theme_id": r.theme_id,
        }
        for r in page
    ]
    following = _cursor(page[-1].id) if len(rows) > limit else None
    return json_response(orjson.dumps({"data": data, "count": int(total), "next": following}))


@router.get(
    "/{job_id}/themes",
    response_model=ThemesPublic,
    responses=AUTH_ERRORS | NOT_FOUND | {422: {"model": ErrorPublic}},
    summary="List a job's themes, largest first",
)
async def list_themes(
    job_id: str,
    tenant: TenantDep,
    session: SessionDep,
    dimension: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="themes per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="'next' of the previous page")
    ] = None,
) -> Response:
    """Themes by size (insights), with their sentiment mix and mean score."""
    job = await _job_or_404(session, job_id, tenant.id)
    raw = _uncursor(cursor)
    try:
        offset = int(raw) if raw is not None else 0
    except ValueError:
        raise _bad_cursor() from None
    if offset < 0:
        raise _bad_cursor()
    rows = (
        await session.execute(
            _THEMES, {"job_id": job.id, "dimension": dimension, "offset": offset, "limit": limit}
        )
    ).all()
    total = int(rows[0].total) if rows else 0
    if not rows and offset:
        total = (
            await session.execute(
                text(
                    "SELECT count(*) FROM themes WHERE job_id = :job_id AND "
                    "(CAST(:dimension AS text) IS NULL OR dimension = :dimension)"
                ),
                {"job_id": job.id, "dimension": dimension},
            )
        ).scalar_one()
    data = [
        {
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "dimension": r.dimension,
            "size": int(r.size),
            "sentiment": {
                "positive": int(r.positive),
                "negative": int(r.negative),
                "neutral": int(r.neutral),
            },
            "mean_score": None if r.mean_score is None else round(float(r.mean_score), 4),
        }
        for r in rows
    ]
    following = _cursor(str(offset + limit)) if offset + limit < total else None
    return json_response(orjson.dumps({"data": data, "count": int(total), "next": following}))
