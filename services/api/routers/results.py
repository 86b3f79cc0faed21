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
- `GET /v1/jobs/{id}/reviews/{review_id}`: one review by the client's `review_id` (or the
  internal id) with its translation, insights and themes.
- `GET /v1/jobs/{id}/insights.csv`, `/themes.csv`: streamed CSV exports
  (`services.api.exports`).

Themes are always resolved through `theme_merges` (see `services.theme.core`).
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.report_page import render_report_html
from shared.reviews import id_key, review_uuid

from .. import exports, store
from ..deps import ClientsDep, JobId, SafeQueryText, SessionDep, TenantDep, ThemeIdQuery, is_id
from ..middleware import REPORT_CSP
from ..schemas import ErrorPublic
from .jobs import AUTH_ERRORS, NOT_FOUND, job_not_found, json_response

router = APIRouter(prefix="/v1/jobs", tags=["results"])

RETRY_AFTER_S = 5
# A themes cursor is an offset: beyond this there are no themes (and bigint stays far off).
MAX_THEME_OFFSET = 1_000_000
# The page runs no script at all: nothing injected into a report can execute.
REPORT_HEADERS = {"Content-Security-Policy": REPORT_CSP}
PENDING: dict[int | str, dict[str, Any]] = {
    202: {"model": None, "description": "the job exists but its report is not ready yet"}
}

_REPORT = text(
    "SELECT (data || jsonb_build_object('generated_at', generated_at))::text "
    "FROM reports WHERE job_id = :job_id"
)

# Themes are resolved through `theme_merges`: an insight belongs to the theme its first
# theme was merged into, a `theme_id` filter naming a merged theme means its survivor, and
# merged themes are not listed.
_INSIGHTS_FROM = """
    FROM insights i
    LEFT JOIN theme_members m ON m.insight_id = i.id
    LEFT JOIN theme_merges g ON g.theme_id = m.theme_id
    WHERE i.job_id = :job_id
      AND (CAST(:dimension AS text) IS NULL OR i.dimension = :dimension)
      AND (CAST(:sentiment AS text) IS NULL OR i.sentiment = :sentiment)
      AND (CAST(:theme_id AS text) IS NULL OR coalesce(g.into_id, m.theme_id) = coalesce(
            (SELECT x.into_id FROM theme_merges x WHERE x.theme_id = :theme_id), :theme_id))
"""
_INSIGHTS = text(
    f"""
    SELECT i.id, i.review_id, i.dimension, i.aspect, i.sentiment, i.score, i.quote,
           i.quote_start, i.quote_end, i.quote_translation, i.five_w,
           coalesce(g.into_id, m.theme_id) AS theme_id, i.external_review_id
    {_INSIGHTS_FROM}
      AND (CAST(:after AS text) IS NULL OR i.id > :after)
    ORDER BY i.id
    LIMIT :limit
    """
)
_INSIGHTS_COUNT = text(f"SELECT count(*) {_INSIGHTS_FROM}")
_THEMES = text(
    """
    WITH members AS (
      SELECT coalesce(g.into_id, m.theme_id) AS theme_id, m.insight_id
      FROM theme_members m LEFT JOIN theme_merges g ON g.theme_id = m.theme_id
      WHERE m.job_id = :job_id
    )
    SELECT t.id, t.name, t.description, t.dimension, count(m.insight_id) AS size,
           count(*) FILTER (WHERE i.sentiment = 'positive') AS positive,
           count(*) FILTER (WHERE i.sentiment = 'negative') AS negative,
           count(*) FILTER (WHERE i.sentiment = 'neutral') AS neutral,
           avg(i.score) AS mean_score,
           count(*) OVER () AS total
    FROM themes t
    LEFT JOIN members m ON m.theme_id = t.id
    LEFT JOIN insights i ON i.id = m.insight_id
    WHERE t.job_id = :job_id
      AND NOT EXISTS (SELECT 1 FROM theme_merges x WHERE x.theme_id = t.id)
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
    """One insight with its verbatim quote (offsets into the review's original text)."""

    id: str
    review_id: str
    dimension: str
    aspect: str
    sentiment: Literal["positive", "negative", "neutral"]
    score: float
    quote: str = Field(description="the customer's words, in the review's original language")
    quote_start: int = Field(description="offset of the quote in the review's original text")
    quote_end: int
    quote_translation: str | None = Field(
        description="the quote in the job's target language; null when already in it"
    )
    five_w: dict[str, Any]
    theme_id: str | None
    external_review_id: str | None = Field(description="the review_id the client uploaded")


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


def _insight_after(cursor: str | None) -> str | None:
    """The insight id an insights cursor points after (an id, or 422)."""
    after = _uncursor(cursor)
    if after is not None and not is_id(after):
        raise _bad_cursor()
    return after


def _theme_offset(cursor: str | None) -> int:
    """The offset a themes cursor stands for (0 to MAX_THEME_OFFSET, or 422)."""
    raw = _uncursor(cursor)
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 7 or int(raw) > MAX_THEME_OFFSET:
        raise _bad_cursor()
    return int(raw)


@router.get(
    "/{job_id}/report",
    responses=AUTH_ERRORS | NOT_FOUND | PENDING,
    summary="Read a job's report (JSON)",
)
async def get_report(job_id: JobId, tenant: TenantDep, session: SessionDep) -> Response:
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
async def get_report_html(job_id: JobId, tenant: TenantDep, session: SessionDep) -> HTMLResponse:
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
            page,
            status_code=status.HTTP_202_ACCEPTED,
            headers={"Retry-After": str(RETRY_AFTER_S), **REPORT_HEADERS},
        )
    return HTMLResponse(render_report_html(orjson.loads(body)), headers=REPORT_HEADERS)


@router.get(
    "/{job_id}/insights",
    response_model=InsightsPublic,
    responses=AUTH_ERRORS | NOT_FOUND,
    summary="List a job's insights",
)
async def list_insights(
    job_id: JobId,
    tenant: TenantDep,
    session: SessionDep,
    dimension: SafeQueryText = None,
    sentiment: Literal["positive", "negative", "neutral"] | None = None,
    theme_id: ThemeIdQuery = None,
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
    after = _insight_after(cursor)
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
            "quote_translation": r.quote_translation,
            "five_w": r.five_w,
            "theme_id": r.theme_id,
            "external_review_id": r.external_review_id,
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
    job_id: JobId,
    tenant: TenantDep,
    session: SessionDep,
    dimension: SafeQueryText = None,
    limit: Annotated[int, Query(ge=1, le=200, description="themes per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="'next' of the previous page")
    ] = None,
) -> Response:
    """Themes by size (insights), with their sentiment mix and mean score."""
    job = await _job_or_404(session, job_id, tenant.id)
    offset = _theme_offset(cursor)
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
                    "SELECT count(*) FROM themes t WHERE t.job_id = :job_id AND "
                    "NOT EXISTS (SELECT 1 FROM theme_merges x WHERE x.theme_id = t.id) AND "
                    "(CAST(:dimension AS text) IS NULL OR t.dimension = :dimension)"
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


# -- one review by the client's id, and CSV exports ---------------------------------------------
# The client's `review_id` is unique within a job: ingest keys a row that has one by it
# (`shared.reviews.dedup_key`), keeps the first upload of it and counts later rows with
# the same id as duplicates, so the internal id follows from the client's. Rows uploaded
# without a `review_id` are keyed by their text and are reached by the internal `id`
# every result carries (`review_id` in insights, `internal_review_id` in exports).

MAX_REVIEW_ID = 200  # `shared.reviews.MAX_SHORT_CHARS`: longer ids were never accepted

_REVIEW = text(
    """
    SELECT r.id, r.external_id, r.text, r.rating, r.language, r.created_at_src, r.author,
           r.source, t.text AS translation, t.source_language, t.target_language,
           t.translated, EXISTS (SELECT 1 FROM review_insights s WHERE s.review_id = r.id)
             AS analysed,
           EXISTS (SELECT 1 FROM review_themed s WHERE s.review_id = r.id) AS themed
    FROM reviews r LEFT JOIN translations t ON t.review_id = r.id
    WHERE r.id = :id AND r.job_id = :job_id
    """
)
_REVIEW_INSIGHTS = text(
    """
    SELECT i.id, i.dimension, i.aspect, i.sentiment, i.score, i.quote, i.quote_start,
           i.quote_end, i.quote_translation, i.five_w, coalesce(g.into_id, m.theme_id) AS theme_id,
           th.name AS theme_name, th.dimension AS theme_dimension
    FROM insights i
    LEFT JOIN theme_members m ON m.insight_id = i.id
    LEFT JOIN theme_merges g ON g.theme_id = m.theme_id
    LEFT JOIN themes th ON th.id = coalesce(g.into_id, m.theme_id)
    WHERE i.job_id = :job_id AND i.review_id = :review_id
    ORDER BY i.quote_start, i.id
    """
)


class ReviewTranslation(BaseModel):
    """A review's text in the job's target language."""

    text: str
    source_language: str
    target_language: str
    translated: bool = Field(description="false when the review already was in the target language")


class ReviewInsight(BaseModel):
    """An insight of one review, with its (resolved) theme."""

    id: str
    dimension: str
    aspect: str
    sentiment: Literal["positive", "negative", "neutral"]
    score: float
    quote: str = Field(description="the customer's words, in the review's original language")
    quote_start: int = Field(description="offset of the quote in the review's original text")
    quote_end: int
    quote_translation: str | None = Field(
        description="the quote in the job's target language; null when already in it"
    )
    five_w: dict[str, Any]
    theme_id: str | None


class ReviewTheme(BaseModel):
    """A theme one of the review's insights belongs to."""

    id: str
    name: str
    dimension: str


class ReviewPublic(BaseModel):
    """One review with its translation, insights and themes."""

    id: str = Field(description="the internal review id (what insights call review_id)")
    review_id: str | None = Field(description="the review_id the client uploaded, if any")
    job_id: str
    text: str = Field(description="the text as uploaded")
    rating: int | None
    language: str | None = Field(description="the language the client gave, if any")
    created_at: str | None
    author: str | None
    source: str | None
    translation: ReviewTranslation | None = Field(description="null until translated")
    analysed: bool = Field(description="insight extraction is done for this review")
    themed: bool = Field(description="its insights have themes")
    insights: list[ReviewInsight]
    themes: list[ReviewTheme]


def _bad_path(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["path", field], "msg": message, "type": "value_error"}],
    )


def client_review_id(raw: str) -> str:
    """The client's review id as ingest stored it (NFC, trimmed); 422 if it cannot be one."""
    value = unicodedata.normalize("NFC", raw).strip()
    if not value:
        raise _bad_path("review_id", "must not be empty")
    if len(value) > MAX_REVIEW_ID:
        raise _bad_path("review_id", f"longer than {MAX_REVIEW_ID} characters ({len(value)})")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise _bad_path("review_id", "contains a control character or a lone surrogate")
    return value


@router.get(
    "/{job_id}/reviews/{review_id:path}",
    response_model=ReviewPublic,
    responses=AUTH_ERRORS
    | {
        404: {"model": ErrorPublic, "description": "no such job, or no such review in it"},
        422: {"model": ErrorPublic, "description": "the review_id cannot be a review id"},
    },
    summary="Read one review by the client's review_id",
)
async def get_review(
    job_id: JobId, review_id: str, tenant: TenantDep, session: SessionDep
) -> Response:
    """The review the client uploaded as `review_id` (or, for rows uploaded without one,
    its internal `id`): its text, translation, insights with quotes and offsets, and
    themes. A `review_id` containing `/` is sent URL-encoded (`%2F`)."""
    job = await _job_or_404(session, job_id, tenant.id)
    rid = client_review_id(review_id)
    row = (
        await session.execute(_REVIEW, {"id": review_uuid(job.id, id_key(rid)), "job_id": job.id})
    ).one_or_none()
    if row is None and is_id(rid):
        # not a client id of this job: perhaps the internal id (of a row uploaded without one)
        row = (await session.execute(_REVIEW, {"id": rid, "job_id": job.id})).one_or_none()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no review with this id in the job")
    insights = (
        await session.execute(_REVIEW_INSIGHTS, {"job_id": job.id, "review_id": row.id})
    ).all()
    themes: dict[str, dict[str, str]] = {}
    for i in insights:
        if i.theme_id and i.theme_name is not None:
            themes.setdefault(
                i.theme_id, {"id": i.theme_id, "name": i.theme_name, "dimension": i.theme_dimension}
            )
    doc = {
        "id": row.id,
        "review_id": row.external_id,
        "job_id": job.id,
        "text": row.text,
        "rating": row.rating,
        "language": row.language,
        "created_at": row.created_at_src,
        "author": row.author,
        "source": row.source,
        "translation": None
        if row.translation is None
        else {
            "text": row.translation,
            "source_language": row.source_language,
            "target_language": row.target_language,
            "translated": row.translated,
        },
        "analysed": row.analysed,
        "themed": row.themed,
        "insights": [
            {
                "id": i.id,
                "dimension": i.dimension,
                "aspect": i.aspect,
                "sentiment": i.sentiment,
                "score": i.score,
                "quote": i.quote,
                "quote_start": i.quote_start,
                "quote_end": i.quote_end,
                "quote_translation": i.quote_translation,
                "five_w": i.five_w,
                "theme_id": i.theme_id,
            }
            for i in insights
        ],
        "themes": list(themes.values()),
    }
    return json_response(orjson.dumps(doc))


CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "the CSV, streamed"},
    **AUTH_ERRORS,
    **NOT_FOUND,
}
BomQuery = Annotated[
    bool, Query(description="start with a UTF-8 byte order mark (for spreadsheets)")
]


def _csv(body: Any, job_id: str, name: str) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-{job_id}.csv"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(
    "/{job_id}/insights.csv",
    response_class=StreamingResponse,
    responses=CSV_RESPONSES,
    summary="Export a job's insights as CSV",
)
async def export_insights(
    job_id: JobId, tenant: TenantDep, session: SessionDep, clients: ClientsDep, bom: BomQuery = True
) -> StreamingResponse:
    """Every insight with the client's and the internal review id, original text,
    translation, dimension, theme, sentiment, quote and quote offsets (into the text the
    quote was taken from). Streamed in pages; cells that a spreadsheet would run as a
    formula are prefixed with `'`."""
    job = await _job_or_404(session, job_id, tenant.id)
    return _csv(exports.insight_rows(clients.sessions, job.id, bom), job.id, "insights")


@router.get(
    "/{job_id}/themes.csv",
    response_class=StreamingResponse,
    responses=CSV_RESPONSES,
    summary="Export a job's themes as CSV",
)
async def export_themes(
    job_id: JobId, tenant: TenantDep, session: SessionDep, bom: BomQuery = True
) -> StreamingResponse:
    """Every theme by dimension: size, reviews, share, sentiment mix, impact on the
    average rating and on sentiment, and its most intense quote with the client's
    review id."""
    job = await _job_or_404(session, job_id, tenant.id)
    rows = await exports.theme_rows(session, job.id)

    async def body() -> AsyncIterator[bytes]:
        yield exports.header(exports.THEME_COLUMNS, bom)
        for i in range(0, len(rows), exports.PAGE_ROWS):
            yield exports.encode_rows(rows[i : i + exports.PAGE_ROWS])

    return _csv(body(), job.id, "themes")
