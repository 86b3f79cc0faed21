"""Translate-specific Prometheus metrics: how reviews went through the stage.

Generic stage metrics (records in/out, batches, commits, dead letters) come from
`shared.metrics` through the runner, LLM call metrics from `shared.llm`.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REVIEWS = Counter(
    "vocstream_translate_reviews_total",
    "Reviews by outcome: skipped (already in the target language), translated, failed",
    ["outcome"],
)
CALLS = Counter(
    "vocstream_translate_calls_total",
    "Translate LLM calls by kind: batch (packed) or single (an item retried alone)",
    ["kind"],
)
CALL_ITEMS = Histogram(
    "vocstream_translate_call_items",
    "Reviews per packed translate call",
    buckets=(1, 2, 5, 10, 15, 20, 25, 30, 40),
)
RETRIED_ALONE = Counter(
    "vocstream_translate_retried_alone_total",
    "Reviews retried in a call of their own (missing, mangled, or their batch call failed)",
)
