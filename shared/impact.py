"""Impact: how much a theme (or its complaints, its praise, a dimension) moves a job's mean.

Thematic-style: the job's mean star rating minus the mean rating of the reviews that do not
carry it, with the number of (rated) reviews behind it - what the average would gain or
lose without it. Jobs without enough ratings (surveys, tickets) get the same measure on
the reviews' mean sentiment (`ImpactIndex.basis` says which one ranks). One definition for
the report stage and the API's exports: `IMPACT_SQL` gathers the numbers per job (themes
resolved through `theme_merges` by `MEMBERS_SQL`), `ImpactIndex` turns them into impact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]

MIN_SUPPORT = 3  # reviews a pain point or delight needs at least ...
MIN_SUPPORT_SHARE = 0.005  # ... and at least this share of the job's reviews
MIN_RATED = 10  # rated reviews below which impact ranks by sentiment, not stars

# An insight's theme resolved through the merges (chains are compressed, so one join does):
# rows (theme_id, insight_id, review_id) of the job `%(job)s`.
MEMBERS_SQL = """
  SELECT coalesce(g.into_id, m.theme_id) AS theme_id, m.insight_id, m.review_id
  FROM theme_members m LEFT JOIN theme_merges g ON g.theme_id = m.theme_id
  WHERE m.job_id = %(job)s
"""

# What impact is computed from, for the job `%(job)s`: per theme, per theme and polarity,
# per dimension and for the whole job, the reviews carrying it with the sum (and count) of
# their ratings and of their mean insight scores.
IMPACT_SQL = f"""
WITH per_review AS (
  SELECT r.id, r.rating, avg(i.score) AS sentiment
  FROM reviews r LEFT JOIN insights i ON i.review_id = r.id AND i.job_id = r.job_id
  WHERE r.job_id = %(job)s
  GROUP BY r.id, r.rating
), members AS (
  SELECT x.theme_id, x.review_id, i.sentiment
  FROM ({MEMBERS_SQL}) x JOIN insights i ON i.id = x.insight_id
), links AS (
  SELECT DISTINCT 'theme' AS kind, theme_id AS key, review_id FROM members
  UNION
  SELECT DISTINCT 'theme:' || sentiment, theme_id, review_id FROM members
  WHERE sentiment IN ('positive', 'negative')
  UNION
  SELECT DISTINCT 'dimension', dimension, review_id FROM insights WHERE job_id = %(job)s
  UNION ALL
  SELECT 'all', '', id FROM per_review
)
SELECT l.kind, l.key, count(*) AS reviews, count(p.rating) AS rated,
       coalesce(sum(p.rating), 0)::float AS rating_sum,
       count(p.sentiment) AS scored, coalesce(sum(p.sentiment), 0)::float AS sentiment_sum
FROM links l JOIN per_review p ON p.id = l.review_id
GROUP BY l.kind, l.key
"""


def named_params(sql: str) -> str:
    """The statement with `:job` for SQLAlchemy's `text()` (the SQL here is written in
    psycopg's `%(job)s` style, which `text()` would take literally)."""
    return sql.replace("%(job)s", ":job")


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def impact_delta(total: float, n: int, part_total: float, part_n: int) -> float | None:
    """Mean over all `n` minus the mean over those outside the part (None if either side
    is empty): what the part adds to (or takes from) the mean."""
    if not part_n or n - part_n <= 0:
        return None
    return total / n - (total - part_total) / (n - part_n)


@dataclass(frozen=True)
class ImpactIndex:
    """The `IMPACT_SQL` rows by (kind, key), with the job's totals."""

    rows: Mapping[tuple[str, str], Row]
    whole: Row

    @classmethod
    def of_rows(cls, rows: Sequence[Row]) -> ImpactIndex:
        """Index the query's rows."""
        by = {(str(r["kind"]), str(r["key"])): r for r in rows}
        return cls(by, by.get(("all", ""), {}))

    @property
    def basis(self) -> str:
        """What impact ranks by: stars when enough reviews have them, else sentiment."""
        return "rating" if int(self.whole.get("rated") or 0) >= MIN_RATED else "sentiment"

    def of(self, kind: str, key: str) -> dict[str, Any]:
        """The impact of one theme (`kind` "theme", "theme:negative", "theme:positive")
        or dimension: reviews behind it, rating and sentiment deltas, mean with/without."""
        part = self.rows.get((kind, key), {})
        w, n = self.whole, int(part.get("reviews") or 0)
        rated, w_rated = int(part.get("rated") or 0), int(w.get("rated") or 0)
        scored, w_scored = int(part.get("scored") or 0), int(w.get("scored") or 0)
        r_sum, w_r_sum = float(part.get("rating_sum") or 0), float(w.get("rating_sum") or 0)
        s_sum, w_s_sum = float(part.get("sentiment_sum") or 0), float(w.get("sentiment_sum") or 0)
        rating = impact_delta(w_r_sum, w_rated, r_sum, rated)
        without = (w_r_sum - r_sum) / (w_rated - rated) if w_rated - rated > 0 else None
        return {
            "reviews": n,
            "rated_reviews": rated,
            "rating": _r(rating, 4),
            "rating_with": _r(r_sum / rated, 3) if rated else None,
            "rating_without": _r(without, 3),
            "sentiment": _r(impact_delta(w_s_sum, w_scored, s_sum, scored), 4),
        }

    def summary(self, reviews: int) -> dict[str, Any]:
        """How impact is measured in this report."""
        w = self.whole
        rated, scored = int(w.get("rated") or 0), int(w.get("scored") or 0)
        return {
            "basis": self.basis,
            "rated_reviews": rated,
            "average_rating": _r(float(w.get("rating_sum") or 0) / rated, 3) if rated else None,
            "mean_sentiment": _r(float(w.get("sentiment_sum") or 0) / scored, 3)
            if scored
            else None,
            "min_support": min_support(reviews),
            "definition": "mean over all reviews minus the mean over the reviews without it",
        }


def min_support(reviews: int) -> int:
    """Reviews a pain point or delight needs: MIN_SUPPORT, or 0.5% of a large job."""
    return max(MIN_SUPPORT, math.ceil(MIN_SUPPORT_SHARE * reviews))


def rank_value(impact: Mapping[str, Any], basis: str) -> float | None:
    """The number a theme ranks by: its impact on the basis (sentiment if unrated)."""
    value = impact.get(basis)
    return value if value is not None else impact.get("sentiment")
