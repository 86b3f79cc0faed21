"""Theme-specific Prometheus metrics: themes opened, insights assigned, fallback names.

The generic stage metrics come from `shared.metrics` through the runner and LLM call
metrics from `shared.llm`. Counters count processing, so a replay is counted again.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from shared import metrics as m
from shared.events import InsightsExtracted

THEMES_OPENED = Counter("vocstream_theme_themes_opened_total", "New themes written")
INSIGHTS_ASSIGNED = Counter(
    "vocstream_theme_insights_assigned_total", "Insights assigned to a theme"
)
FALLBACK_NAMES = Counter(
    "vocstream_theme_fallback_names_total",
    "Themes named from their aspect because the LLM could not name them",
)


def observe(events: Iterable[InsightsExtracted], opened: int, assigned: int) -> None:
    """Count a processed batch: reviews in, themes opened, insights assigned."""
    m.REVIEWS_IN.labels("theme").inc(sum(len(e.review_ids) for e in events))
    THEMES_OPENED.inc(opened)
    INSIGHTS_ASSIGNED.inc(assigned)
