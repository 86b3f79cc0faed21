"""Theme-specific Prometheus metrics: themes opened and merged, insights placed, fallbacks.

The generic stage metrics come from `shared.metrics` through the runner, and LLM and
embedding call metrics (stage labels `theme` and `embed`) from `shared.llm`. Counters count
processing, so a replay is counted again (a replayed insight is not placed again, though).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from shared import metrics as m
from shared.events import InsightsExtracted

THEMES_OPENED = Counter("vocstream_theme_themes_opened_total", "New themes opened")
THEMES_MERGED = Counter(
    "vocstream_theme_themes_merged_total", "Themes merged into another by consolidation"
)
INSIGHTS_ASSIGNED = Counter(
    "vocstream_theme_insights_assigned_total", "Insights placed in a theme for the first time"
)
EMBED_OUTAGES = Counter(
    "vocstream_theme_embedding_outages_total",
    "Embedding calls that failed after the LLM layer's retries (the batch waits, retried in place)",
)
FALLBACK_NAMES = Counter(
    "vocstream_theme_fallback_names_total",
    "Themes named from their aspect because the LLM could not name them",
)


def observe(events: Iterable[InsightsExtracted], opened: int, placed: int, merged: int) -> None:
    """Count a processed batch: reviews in, themes opened and merged, insights placed."""
    m.REVIEWS_IN.labels("theme").inc(sum(len(e.review_ids) for e in events))
    THEMES_OPENED.inc(opened)
    THEMES_MERGED.inc(merged)
    INSIGHTS_ASSIGNED.inc(placed)
