"""CSV exports of a job's results, streamed a page at a time (`routers/results.py` serves them).

- `insights.csv`: one row per insight with the client's review id and the internal one,
  the original text, the translation (when there is one), dimension, theme, aspect,
  sentiment, score, the verbatim quote in the customer's language, its offsets into the
  original text, and its translation into the job's target language (empty when the
  review was already in it). Pages of `PAGE_ROWS` insights by keyset on (review id,
  insight id), each read in its own short session: memory stays constant and no connection
  is held while a slow client downloads. Rows written while the export runs may or may not
  be included, never twice.
- `themes.csv`: one row per theme (merged themes resolved away) with its dimension, size,
  reviews, sentiment mix, impact on the average rating and an example quote. A job has
  tens of themes, so it is one read.

Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage return)
as a formula, and review text and model text are untrusted: `neutralise` prefixes such a
cell with an apostrophe (OWASP's advice). Only text cells are touched; numbers are written
by us and stay numbers. A UTF-8 byte order mark leads the file unless `bom=false`, so Excel
shows Japanese or German text as it is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.impact import IMPACT_SQL, MEMBERS_SQL, ImpactIndex, named_params

PAGE_ROWS = 200
BOM = "\ufeff"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

INSIGHT_COLUMNS = (
    "job_id",
    "review_id",
    "internal_review_id",
    "insight_id",
    "source_language",
    "rating",
    "dimension",
    "theme_id",
    "theme",
    "aspect",
    "sentiment",
    "score",
    "quote",
    "quote_start",
    "quote_end",
    "quote_translation",
    "original_text",
    "translation",
)
THEME_COLUMNS = (
    "job_id",
    "dimension",
    "theme_id",
    "theme",
    "description",
    "insights",
    "reviews",
    "share",
    "positive",
    "negative",
    "neutral",
    "mean_sentiment",
    "rating_impact",
    "sentiment_impact",
    "rated_reviews",
    "example_quote",
    "example_review_id",
    "example_internal_review_id",
)

_INSIGHTS_PAGE = text(
    """
    SELECT i.id, i.review_id, r.external_id, r.text AS original, r.rating,
           coalesce(t.source_language, r.language) AS source_language,
           t.text AS analysed, t.translated,
           i.dimension, i.aspect, i.sentiment, i.score, i.quote, i.quote_start, i.quote_end,
           i.quote_translation,
           coalesce(g.into_id, m.theme_id) AS theme_id, th.name AS theme
    FROM insights i
    JOIN reviews r ON r.id = i.review_id
    LEFT JOIN translations t ON t.review_id = i.review_id
    LEFT JOIN theme_members m ON m.insight_id = i.id
    LEFT JOIN theme_merges g ON g.theme_id = m.theme_id
    LEFT JOIN themes th ON th.id = coalesce(g.into_id, m.theme_id)
    WHERE i.job_id = :job
      AND (CAST(:after_review AS text) IS NULL
           OR (i.review_id, i.id) > (CAST(:after_review AS text), CAST(:after_id AS text)))
    ORDER BY i.review_id, i.id
    LIMIT :limit
    """
)

_THEMES = text(
    f"""
    WITH members AS ({named_params(MEMBERS_SQL)})
    SELECT t.id, t.dimension, t.name, t.description,
           count(i.id) AS insights,
           count(*) FILTER (WHERE i.sentiment = 'positive') AS positive,
           count(*) FILTER (WHERE i.sentiment = 'negative') AS negative,
           count(*) FILTER (WHERE i.sentiment = 'neutral') AS neutral,
           avg(i.score)::float AS mean_score,
           (array_agg(i.quote ORDER BY abs(i.score) DESC, i.id))[1] AS example_quote,
           (array_agg(i.review_id ORDER BY abs(i.score) DESC, i.id))[1] AS example_review
    FROM themes t
    LEFT JOIN members x ON x.theme_id = t.id
    LEFT JOIN insights i ON i.id = x.insight_id
    WHERE t.job_id = :job
      AND NOT EXISTS (SELECT 1 FROM theme_merges g WHERE g.theme_id = t.id)
    GROUP BY t.id, t.dimension, t.name, t.description
    ORDER BY t.dimension, count(i.id) DESC, t.id
    """
)
_EXTERNAL_IDS = text("SELECT id, external_id FROM reviews WHERE id = ANY(:ids)")
_IMPACT = text(named_params(IMPACT_SQL))


def neutralise(cell: str) -> str:
    """A text cell a spreadsheet will not run as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, float):
        return repr(round(value, 4))
    return value


def encode_rows(rows: Iterable[Sequence[Any]]) -> bytes:
    """CSV lines (RFC 4180 quoting, CRLF) of already ordered values, cells neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue().encode()


def header(columns: Sequence[str], bom: bool) -> bytes:
    """The header line, after the byte order mark when asked."""
    return (BOM.encode() if bom else b"") + encode_rows([columns])


SessionFactory = Callable[[], Any]  # an `async_sessionmaker`: `async with f() as session`


async def insight_rows(sessions: SessionFactory, job_id: str, bom: bool) -> AsyncIterator[bytes]:
    """`insights.csv`, a page of `PAGE_ROWS` insights per chunk (see the module docstring)."""
    yield header(INSIGHT_COLUMNS, bom)
    after: tuple[str | None, str | None] = (None, None)
    while True:
        session: AsyncSession
        async with sessions() as session:
            page = (
                await session.execute(
                    _INSIGHTS_PAGE,
                    {
                        "job": job_id,
                        "after_review": after[0],
                        "after_id": after[1],
                        "limit": PAGE_ROWS,
                    },
                )
            ).all()
        if not page:
            return
        yield encode_rows(
            (
                job_id,
                r.external_id,
                r.review_id,
                r.id,
                r.source_language,
                r.rating,
                r.dimension,
                r.theme_id,
                r.theme,
                r.aspect,
                r.sentiment,
                r.score,
                r.quote,
                r.quote_start,
                r.quote_end,
                r.quote_translation,
                r.original,
                r.analysed if r.translated else None,
            )
            for r in page
        )
        if len(page) < PAGE_ROWS:
            return
        after = (page[-1].review_id, page[-1].id)


async def theme_rows(session: AsyncSession, job_id: str) -> list[tuple[Any, ...]]:
    """`themes.csv`'s rows (values in `THEME_COLUMNS` order)."""
    themes = (await session.execute(_THEMES, {"job": job_id})).all()
    if not themes:
        return []
    impact = ImpactIndex.of_rows(
        [dict(r._mapping) for r in (await session.execute(_IMPACT, {"job": job_id})).all()]
    )
    ids = [t.example_review for t in themes if t.example_review]
    external: Mapping[str, str | None] = dict(
        (await session.execute(_EXTERNAL_IDS, {"ids": ids})).all() if ids else []
    )
    total = sum(int(t.insights) for t in themes)
    out = []
    for t in themes:
        effect = impact.of("theme", t.id)
        out.append(
            (
                job_id,
                t.dimension,
                t.id,
                t.name,
                t.description,
                int(t.insights),
                effect["reviews"],
                round(int(t.insights) / total, 4) if total else 0.0,
                int(t.positive),
                int(t.negative),
                int(t.neutral),
                None if t.mean_score is None else round(float(t.mean_score), 4),
                effect["rating"],
                effect["sentiment"],
                effect["rated_reviews"],
                t.example_quote,
                external.get(t.example_review) if t.example_review else None,
                t.example_review,
            )
        )
    return out
