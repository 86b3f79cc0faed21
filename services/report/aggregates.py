"""The report's numbers: SQL aggregates over a job's rows, shaped into report sections.

Every section comes from one GROUP BY query (`Q_*`) run by `load_raw`, then a pure
`build_*` function turns the rows into the JSON the report holds, so the shaping is unit
tested without a database. Everything is recomputed from the stage tables each time, so a
replay or a rebuild gives the same report for the same rows.

Sentiment scores are the insight stage's scores (-1 most negative .. +1 most positive).
An insight's theme is its membership resolved through `theme_merges` (a merged theme's
insights count for the theme that absorbed it); merged themes are not listed.

Impact (`shared.impact`): what a theme, its praise or complaints, or a dimension adds to
or takes from the job's mean rating. Pain points and delights are themes' complaints and
praise with at least `min_support` reviews, ranked by impact: volume and intensity both
count, so a two-review complaint cannot top the list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from shared.impact import IMPACT_SQL, MEMBERS_SQL, ImpactIndex, min_support, rank_value

Row = Mapping[str, Any]

TOP_THEMES = 10
MAX_POINTS = 12
QUOTES_PER_POINT = 3
TAGS_PER_W = 6
TREND_MIN_REVIEWS = 20  # fewer reviews than this: halves are too small to call a trend
TREND_MIN_DELTA = 0.02  # share change (absolute) below which a theme is "stable"
FIVE_W = ("who", "what", "when", "where", "why")
SENTIMENTS = ("positive", "negative", "neutral")

# -- SQL ------------------------------------------------------------------------------------
# Every query takes %(job)s. Joins on job_id as well as the row key so the per-job
# indexes serve them.

Q_COUNTS = """
SELECT
  (SELECT count(*) FROM reviews WHERE job_id = %(job)s) AS reviews,
  (SELECT count(*) FROM translations WHERE job_id = %(job)s) AS translated,
  (SELECT count(*) FROM translations WHERE job_id = %(job)s AND translated) AS translated_by_llm,
  (SELECT count(*) FROM review_insights WHERE job_id = %(job)s) AS with_insights,
  (SELECT count(*) FROM review_themed WHERE job_id = %(job)s) AS themed,
  (SELECT count(*) FROM insights WHERE job_id = %(job)s) AS insights,
  (SELECT count(*) FROM themes t WHERE t.job_id = %(job)s
     AND NOT EXISTS (SELECT 1 FROM theme_merges g WHERE g.theme_id = t.id)) AS themes,
  (SELECT avg(rating)::float FROM reviews WHERE job_id = %(job)s) AS average_rating
"""

# Dead letters that still count: not redriven, and the review did not make it through
# after all (a replay may have themed it since).
Q_DEAD_BY_STAGE = """
SELECT d.stage, count(DISTINCT d.review_id) AS n
FROM dead_letters d
WHERE d.job_id = %(job)s AND d.redriven_at IS NULL AND d.review_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM review_themed t WHERE t.review_id = d.review_id)
GROUP BY d.stage
"""

Q_JOB_MODEL = "SELECT dimensions, five_w FROM job_models WHERE job_id = %(job)s"

Q_SENTIMENT_BY_DIMENSION = """
SELECT dimension, sentiment, count(*) AS n, avg(score)::float AS mean
FROM insights WHERE job_id = %(job)s
GROUP BY dimension, sentiment
"""

Q_THEMES = f"""
WITH members AS ({MEMBERS_SQL})
SELECT t.id, t.name, t.description, t.dimension, i.sentiment,
       count(*) AS n, avg(i.score)::float AS mean
FROM members x
JOIN themes t ON t.id = x.theme_id
JOIN insights i ON i.id = x.insight_id
GROUP BY t.id, t.name, t.description, t.dimension, i.sentiment
"""

# Reviews split in two halves by when they were written (or, lacking dates, ingest order);
# a theme's insights are counted per half for its trend.
Q_THEME_HALVES = f"""
WITH ordered AS (
  SELECT id, ntile(2) OVER (ORDER BY created_at_src NULLS LAST, ingested_at, origin, id) AS half
  FROM reviews WHERE job_id = %(job)s
), members AS ({MEMBERS_SQL})
SELECT x.theme_id, o.half, count(*) AS n
FROM members x JOIN ordered o ON o.id = x.review_id
GROUP BY x.theme_id, o.half
"""

# A theme's praise and complaints: counts, the most frequent aspect, the most intense
# distinct quotes with the client's review id.
Q_THEME_POINTS = f"""
WITH members AS ({MEMBERS_SQL})
SELECT x.theme_id, t.name, t.description, t.dimension, i.sentiment,
       count(*) AS n, avg(i.score)::float AS mean,
       mode() WITHIN GROUP (ORDER BY lower(i.aspect)) AS aspect,
       (array_agg(jsonb_build_object('quote', i.quote, 'review_id', i.review_id,
                                     'quote_translation', i.quote_translation,
                                     'external_review_id', i.external_review_id,
                                     'score', i.score)
                  ORDER BY abs(i.score) DESC, i.id))[1:8] AS quotes
FROM members x
JOIN themes t ON t.id = x.theme_id
JOIN insights i ON i.id = x.insight_id
WHERE i.sentiment IN ('positive', 'negative')
GROUP BY x.theme_id, t.name, t.description, t.dimension, i.sentiment
"""

Q_FIVE_W_TAGS = """
SELECT kv.key AS w, lower(kv.value) AS value, count(*) AS n
FROM insights i, jsonb_each_text(i.five_w) AS kv
WHERE i.job_id = %(job)s AND kv.value IS NOT NULL AND kv.value <> ''
GROUP BY kv.key, lower(kv.value)
"""

Q_RATING = """
WITH per_review AS (
  SELECT r.id, r.rating, avg(i.score) AS mean, count(i.id) AS n
  FROM reviews r
  LEFT JOIN insights i ON i.review_id = r.id AND i.job_id = r.job_id
  WHERE r.job_id = %(job)s
  GROUP BY r.id, r.rating
)
SELECT rating, count(*) AS reviews, avg(mean)::float AS mean, sum(n)::int AS insights
FROM per_review GROUP BY rating
"""

Q_LANGUAGES = """
WITH per_review AS (
  SELECT review_id, avg(score) AS mean FROM insights WHERE job_id = %(job)s GROUP BY review_id
)
SELECT t.source_language AS language, count(*) AS reviews,
       count(*) FILTER (WHERE t.translated) AS translated, avg(p.mean)::float AS mean
FROM translations t LEFT JOIN per_review p ON p.review_id = t.review_id
WHERE t.job_id = %(job)s
GROUP BY t.source_language
"""


@dataclass
class RawAggregates:
    """The rows of every aggregate query for one job, as dicts."""

    counts: Row = field(default_factory=dict)
    dead_by_stage: list[Row] = field(default_factory=list)
    model: Row | None = None
    sentiment: list[Row] = field(default_factory=list)
    themes: list[Row] = field(default_factory=list)
    theme_halves: list[Row] = field(default_factory=list)
    points: list[Row] = field(default_factory=list)
    impact: list[Row] = field(default_factory=list)
    five_w_tags: list[Row] = field(default_factory=list)
    ratings: list[Row] = field(default_factory=list)
    languages: list[Row] = field(default_factory=list)


async def load_raw(conn: psycopg.AsyncConnection[Any], job_id: str) -> RawAggregates:
    """Run every aggregate query for `job_id` (read-only; the caller ends the transaction)."""
    params = {"job": job_id}

    async def rows(sql: str) -> list[Row]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    counts = await rows(Q_COUNTS)
    model = await rows(Q_JOB_MODEL)
    return RawAggregates(
        counts=counts[0] if counts else {},
        dead_by_stage=await rows(Q_DEAD_BY_STAGE),
        model=model[0] if model else None,
        sentiment=await rows(Q_SENTIMENT_BY_DIMENSION),
        themes=await rows(Q_THEMES),
        theme_halves=await rows(Q_THEME_HALVES),
        points=await rows(Q_THEME_POINTS),
        impact=await rows(IMPACT_SQL),
        five_w_tags=await rows(Q_FIVE_W_TAGS),
        ratings=await rows(Q_RATING),
        languages=await rows(Q_LANGUAGES),
    )


# -- pure shaping ---------------------------------------------------------------------------


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _weighted_mean(pairs: Iterable[tuple[int, float | None]]) -> float | None:
    total = 0
    acc = 0.0
    for n, mean in pairs:
        if mean is not None and n:
            total += n
            acc += n * float(mean)
    return acc / total if total else None


def build_overview(counts: Row, dead_by_stage: Sequence[Row], job: Row) -> dict[str, Any]:
    """Overview counts and coverage (themed / ingested, dead-lettered counted apart)."""
    reviews = int(counts.get("reviews") or 0)
    themed = int(counts.get("themed") or 0)
    dead = {str(r["stage"]): int(r["n"]) for r in dead_by_stage}
    dead_total = sum(dead.values())
    return {
        "submitted": int(job.get("submitted") or 0),
        "rejected": int(job.get("rejected") or 0),
        "reviews": reviews,
        "translated": int(counts.get("translated") or 0),
        "translated_by_llm": int(counts.get("translated_by_llm") or 0),
        "with_insights": int(counts.get("with_insights") or 0),
        "themed": themed,
        "dead_lettered": dead_total,
        "dead_lettered_by_stage": dict(sorted(dead.items())),
        "insights": int(counts.get("insights") or 0),
        "themes": int(counts.get("themes") or 0),
        "average_rating": _r(counts.get("average_rating"), 2),
        "coverage": coverage(themed, reviews),
    }


def coverage(themed: int, reviews: int) -> float:
    """Share of the job's reviews that made it through every stage (1.0 for an empty job)."""
    return round(min(1.0, themed / reviews), 4) if reviews else 1.0


def build_sentiment_by_dimension(
    rows: Sequence[Row], dimensions: Sequence[Row], impact: ImpactIndex | None = None
) -> list[dict[str, Any]]:
    """Per dimension: insight counts per sentiment, share, mean score, net sentiment, and
    (given the impact rows) the reviews mentioning it and its impact.

    Learned dimensions without insights are listed too (with zeros), so the page shows
    what was looked for and not found; order is by number of insights.
    """
    per: dict[str, dict[str, Any]] = {}
    descriptions = {str(d.get("name")): str(d.get("description") or "") for d in dimensions}
    for name in descriptions:
        per[name] = {"positive": 0, "negative": 0, "neutral": 0, "_means": []}
    for r in rows:
        d = per.setdefault(
            str(r["dimension"]), {"positive": 0, "negative": 0, "neutral": 0, "_means": []}
        )
        sentiment = str(r["sentiment"])
        if sentiment in SENTIMENTS:
            d[sentiment] += int(r["n"])
        d["_means"].append((int(r["n"]), r["mean"]))
    all_insights = sum(d["positive"] + d["negative"] + d["neutral"] for d in per.values())
    out = []
    for name, d in per.items():
        total = d["positive"] + d["negative"] + d["neutral"]
        entry: dict[str, Any] = {
            "dimension": name,
            "description": descriptions.get(name, ""),
            "insights": total,
            "share": _share(total, all_insights),
            "positive": d["positive"],
            "negative": d["negative"],
            "neutral": d["neutral"],
            "mean_score": _r(_weighted_mean(d["_means"])),
            "net_sentiment": _r((d["positive"] - d["negative"]) / total) if total else None,
        }
        if impact is not None:
            entry["impact"] = impact.of("dimension", name)
        out.append(entry)
    out.sort(key=lambda x: (-x["insights"], x["dimension"]))
    return out


def theme_trend(earlier: int, later: int, earlier_total: int, later_total: int) -> dict[str, Any]:
    """A theme's share of insights in the later half of reviews vs the earlier half."""
    e_share = _share(earlier, earlier_total)
    l_share = _share(later, later_total)
    delta = round(l_share - e_share, 4)
    if earlier_total + later_total < TREND_MIN_REVIEWS or not earlier_total or not later_total:
        direction = "n/a"
    elif delta >= TREND_MIN_DELTA:
        direction = "rising"
    elif delta <= -TREND_MIN_DELTA:
        direction = "falling"
    else:
        direction = "stable"
    return {
        "earlier_share": e_share,
        "later_share": l_share,
        "delta": delta,
        "direction": direction,
    }


def build_themes(
    rows: Sequence[Row], halves: Sequence[Row], impact: ImpactIndex | None = None
) -> list[dict[str, Any]]:
    """Every theme, largest first: size, share of themed insights, sentiment mix, mean
    score, trend, and (given the impact rows) reviews and impact."""
    themes: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = themes.setdefault(
            str(r["id"]),
            {
                "id": str(r["id"]),
                "name": r["name"],
                "description": r["description"],
                "dimension": r["dimension"],
                "size": 0,
                "sentiment": {"positive": 0, "negative": 0, "neutral": 0},
                "_means": [],
            },
        )
        n = int(r["n"])
        t["size"] += n
        if r["sentiment"] in SENTIMENTS:
            t["sentiment"][r["sentiment"]] += n
        t["_means"].append((n, r["mean"]))
    per_half: dict[str, dict[int, int]] = defaultdict(dict)
    half_totals = {1: 0, 2: 0}
    for h in halves:
        half = int(h["half"])
        per_half[str(h["theme_id"])][half] = int(h["n"])
        half_totals[half] = half_totals.get(half, 0) + int(h["n"])
    total = sum(t["size"] for t in themes.values())
    out = []
    for t in sorted(themes.values(), key=lambda x: (-x["size"], x["name"], x["id"])):
        means = t.pop("_means")
        t["share"] = _share(t["size"], total)
        t["mean_score"] = _r(_weighted_mean(means))
        counts = per_half.get(t["id"], {})
        t["trend"] = theme_trend(
            counts.get(1, 0), counts.get(2, 0), half_totals.get(1, 0), half_totals.get(2, 0)
        )
        if impact is not None:
            t["impact"] = impact.of("theme", t["id"])
            t["reviews"] = t["impact"]["reviews"]
        out.append(t)
    return out


def build_top_themes(
    rows: Sequence[Row],
    halves: Sequence[Row],
    limit: int = TOP_THEMES,
    impact: ImpactIndex | None = None,
) -> list[dict[str, Any]]:
    """The largest themes (see `build_themes`)."""
    return build_themes(rows, halves, impact)[:limit]


def build_theme_hierarchy(
    dimensions: Sequence[Mapping[str, Any]], themes: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Dimension -> themes: each dimension with insights (its numbers, as in
    `sentiment_by_dimension`) and all of its themes, largest first."""
    by_dim: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in themes:
        by_dim[str(t["dimension"])].append(t)
    out = []
    for d in dimensions:
        if not d["insights"] and not by_dim.get(str(d["dimension"])):
            continue
        mine = by_dim.pop(str(d["dimension"]), [])
        out.append({**d, "themes": [_theme_brief(t) for t in mine]})
    for name, mine in sorted(by_dim.items()):  # themes of a dimension no longer learned
        out.append(
            {
                "dimension": name,
                "insights": sum(t["size"] for t in mine),
                "themes": [_theme_brief(t) for t in mine],
            }
        )
    return out


def _theme_brief(t: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "size", "share", "sentiment", "mean_score", "reviews", "impact")
    return {k: t[k] for k in keys if k in t}


def _quotes(raw: Any, limit: int = QUOTES_PER_POINT) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for q in raw or []:
        text = str(q.get("quote") or "").strip()
        if not text or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        out.append(
            {
                "quote": q["quote"],  # the customer's words, in the review's language
                "quote_translation": q.get("quote_translation"),  # None: already readable
                "review_id": q.get("review_id"),
                "external_review_id": q.get("external_review_id"),  # the client's own id
                "score": q.get("score"),
            }
        )
        if len(out) >= limit:
            break
    return out


def build_points(
    rows: Sequence[Row],
    sentiment: str,
    impact: ImpactIndex,
    reviews: int,
    limit: int = MAX_POINTS,
) -> list[dict[str, Any]]:
    """Pain points (`negative`) or delights (`positive`): the complaints or the praise of
    a theme, carried by at least `min_support(reviews)` reviews, ranked by impact (most
    harmful complaints first, most helpful praise first), each with up to three distinct
    verbatim quotes (most intense first) and their internal and client review ids."""
    basis = impact.basis
    floor = min_support(reviews)
    points = []
    for r in rows:
        if r["sentiment"] != sentiment:
            continue
        effect = impact.of(f"theme:{sentiment}", str(r["theme_id"]))
        if effect["reviews"] < floor:
            continue
        points.append(
            {
                "theme_id": str(r["theme_id"]),
                "name": r["name"],
                "description": r["description"],
                "dimension": str(r["dimension"]),
                "aspect": str(r["aspect"] or ""),
                "mentions": int(r["n"]),
                "reviews": effect["reviews"],
                "share": _share(effect["reviews"], reviews),
                "mean_score": _r(r["mean"]),
                "impact": effect,
                "quotes": _quotes(r["quotes"]),
            }
        )
    sign = 1 if sentiment == "negative" else -1

    def order(p: dict[str, Any]) -> tuple[Any, ...]:
        value = rank_value(p["impact"], basis)
        return (value is None, sign * (value or 0.0), -p["reviews"], p["name"], p["theme_id"])

    points.sort(key=order)
    return points[:limit]


def build_five_w(model: Row | None, tags: Sequence[Row], limit: int = TAGS_PER_W) -> dict[str, Any]:
    """The 5W profile: the learned model's answers plus the most frequent insight tags."""
    learned = (model or {}).get("five_w") or {}
    per_w: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for t in tags:
        per_w[str(t["w"])].append((str(t["value"]), int(t["n"])))
    out: dict[str, Any] = {}
    for w in FIVE_W:
        values = per_w.get(w, [])
        total = sum(n for _, n in values)
        values.sort(key=lambda x: (-x[1], x[0]))
        raw_learned = learned.get(w) or []
        out[w] = {
            "learned": [str(x) for x in raw_learned]
            if isinstance(raw_learned, list)
            else [str(raw_learned)],
            "observed": [
                {"value": v, "count": n, "share": _share(n, total)} for v, n in values[:limit]
            ],
        }
    return out


def build_rating_vs_sentiment(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per star rating 1-5 (and unrated, if any): reviews and mean review sentiment."""
    by_rating = {r["rating"]: r for r in rows}
    out = []
    for rating in (1, 2, 3, 4, 5, None):
        r = by_rating.get(rating)
        if rating is None and r is None:
            continue
        out.append(
            {
                "rating": rating,
                "reviews": int(r["reviews"]) if r else 0,
                "insights": int(r["insights"] or 0) if r else 0,
                "mean_score": _r(r["mean"]) if r else None,
            }
        )
    return out


def build_languages(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per source language: reviews, share, how many needed the LLM, mean sentiment."""
    total = sum(int(r["reviews"]) for r in rows)
    out: list[dict[str, Any]] = [
        {
            "language": str(r["language"]),
            "reviews": int(r["reviews"]),
            "share": _share(int(r["reviews"]), total),
            "translated": int(r["translated"] or 0),
            "mean_score": _r(r["mean"]),
        }
        for r in rows
    ]
    out.sort(key=lambda x: (-x["reviews"], x["language"]))
    return out


def build_aggregates(raw: RawAggregates, job: Row) -> dict[str, Any]:
    """Every aggregate section of the report from the raw query rows."""
    dimensions = list((raw.model or {}).get("dimensions") or [])
    impact = ImpactIndex.of_rows(raw.impact)
    overview = build_overview(raw.counts, raw.dead_by_stage, job)
    by_dimension = build_sentiment_by_dimension(raw.sentiment, dimensions, impact)
    themes = build_themes(raw.themes, raw.theme_halves, impact)
    reviews = overview["reviews"]
    return {
        "overview": overview,
        "dimensions": [
            {"name": str(d.get("name")), "description": str(d.get("description") or "")}
            for d in dimensions
        ],
        "sentiment_by_dimension": by_dimension,
        "impact": impact.summary(reviews),
        "top_themes": themes[:TOP_THEMES],
        "themes_by_dimension": build_theme_hierarchy(by_dimension, themes),
        "pain_points": build_points(raw.points, "negative", impact, reviews),
        "delights": build_points(raw.points, "positive", impact, reviews),
        "five_w": build_five_w(raw.model, raw.five_w_tags),
        "rating_vs_sentiment": build_rating_vs_sentiment(raw.ratings),
        "languages": build_languages(raw.languages),
    }
