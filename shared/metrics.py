"""Prometheus metrics common to every stage, attached in one place.

Each service process exposes `/metrics` (the API through its own route, stages on
`VOC_METRICS_PORT`). Stage metrics carry a `stage` label so one dashboard covers all.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("vocstream_events_in_total", "Kafka records consumed", ["stage", "topic"])
EVENTS_OUT = Counter("vocstream_events_out_total", "Kafka records produced", ["stage", "topic"])
REVIEWS_IN = Counter("vocstream_reviews_in_total", "Reviews received by a stage", ["stage"])
REVIEWS_OUT = Counter("vocstream_reviews_out_total", "Reviews a stage passed on", ["stage"])
ROWS_UPSERTED = Counter(
    "vocstream_rows_upserted_total", "Rows upserted into Postgres", ["stage", "table"]
)
DEAD_LETTERS = Counter(
    "vocstream_dead_letters_total", "Records sent to a dead-letter topic", ["stage", "error_type"]
)
BATCH_SIZE = Histogram(
    "vocstream_batch_records",
    "Records per processed batch",
    ["stage"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
BATCH_SECONDS = Histogram(
    "vocstream_batch_seconds",
    "Time to process a batch: core, upserts, produce and commit",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INFLIGHT_BATCHES = Gauge(
    "vocstream_inflight_batches", "Batches being processed concurrently", ["stage"]
)
COMMITS = Counter("vocstream_commits_total", "Offset commits", ["stage", "result"])
LAST_COMMIT = Gauge(
    "vocstream_last_commit_timestamp_seconds", "Unix time of the last offset commit", ["stage"]
)


def serve_metrics(port: int) -> None:
    """Expose the default registry on `port` (0 means do not serve)."""
    if port:
        start_http_server(port, addr="0.0.0.0")
