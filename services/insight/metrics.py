"""Insight-specific Prometheus metrics: per-review outcomes, insights, extraction time.

The generic stage metrics (records in/out, batches, commits, dead letters) come from
`shared.metrics` through the runner and LLM call metrics from `shared.llm`; this adds what
only the insight stage knows. Counters count processing, so a replay is counted again.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from services.insight.core import ReviewOutcome
from shared import metrics as m

REVIEWS = Counter(
    "vocstream_insight_reviews_total",
    "Reviews by outcome: with_insights, no_insights, or failed (dead-lettered)",
    ["outcome"],
)
INSIGHTS = Counter("vocstream_insight_insights_total", "Insights extracted")
EXTRACTING = Gauge(
    "vocstream_insight_reviews_extracting", "Reviews holding a concurrency slot (LLM in flight)"
)
REVIEW_SECONDS = Histogram(
    "vocstream_insight_review_seconds",
    "Time to extract one review's insights, limiter waits and retries included",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 150),
)


def observe(outcomes: Iterable[ReviewOutcome]) -> None:
    """Count the reviews and insights of a processed record."""
    n = 0
    for o in outcomes:
        n += 1
        if o.failed:
            REVIEWS.labels("failed").inc()
        elif o.insights:
            REVIEWS.labels("with_insights").inc()
            INSIGHTS.inc(len(o.insights))
        else:
            REVIEWS.labels("no_insights").inc()
    m.REVIEWS_IN.labels("insight").inc(n)
